"""Local paths and file:// URLs: unbuffered files, seek to the start, atomic writes by rename."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from fmashard.errors import AuthError, NotFoundError, StorageError
from fmashard.storage.atomic import atomic_write
from fmashard.storage.base import Backend


def path_of(url: str) -> Path:
    url = str(url)
    return Path(urlparse(url).path) if url.startswith("file://") else Path(url)


def open_local(url: str):
    """An unbuffered binary file for a local path or file:// URL; errors name the URL."""
    try:
        return open(path_of(url), "rb", buffering=0)
    except FileNotFoundError:
        raise NotFoundError(url, "no such file") from None
    except PermissionError:
        raise AuthError(url, "permission denied") from None
    except IsADirectoryError:
        raise StorageError(url, "is a folder, expected a file") from None


class LocalBackend(Backend):
    label = "local paths, file://"
    remote = False
    local = True
    can_write = True

    def open(self, url, start, end, version=None):
        f = open_local(url)
        if start:
            f.seek(start)
        return f, os.fstat(f.fileno()).st_size

    def local_path(self, url):
        return path_of(url)

    def size(self, url):
        try:
            return path_of(url).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(url, "no such file") from None

    def write_atomic(self, url, data):
        with atomic_write(path_of(url), url) as f:
            f.write(data)

    def delete(self, url):
        path_of(url).unlink(missing_ok=True)

    def join(self, base, *parts):
        if base.startswith("file://"):
            return super().join(base, *parts)
        return str(Path(base).joinpath(*parts))

    def parent(self, url):
        if url.startswith("file://"):
            return super().parent(url)
        return str(Path(url).parent)
