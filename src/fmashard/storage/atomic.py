"""The one way a local file is written: to `name.tmp-<pid>` beside it, fsync, rename.

A reader therefore sees the old file or the new one, never half of one, and a kill -9 leaves at most a
`*.tmp-<pid>` leftover (`shard_tools.build_output` cleans those up by that name).

    with atomic_write(path) as f: f.write(...)       # a binary file
    with atomic_path(path) as tmp: torch.save(x, tmp) # a path, for writers that want one
    out = AtomicFile(path); out.file.write(...); out.commit() or out.abort()   # a long-lived stream
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from fmashard.errors import StorageError


def temp_name(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


class AtomicFile:
    """A binary file open at `path.tmp-<pid>`: `commit()` makes it `path`, `abort()` removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tmp_path = temp_name(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.tmp_path, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp_path.unlink(missing_ok=True)


def _cannot_write(url, path, exc: OSError) -> StorageError:
    return StorageError(str(url or path), f"cannot write ({exc.strerror or exc})")


@contextmanager
def atomic_write(path: str | Path, url: str | None = None):
    """Yield a binary file that replaces `path` when the block ends without an error; an OSError is a
    one-line `StorageError` naming `url` (default: the path), and nothing is left behind."""
    try:
        out = AtomicFile(path)
    except OSError as exc:
        raise _cannot_write(url, path, exc) from None
    try:
        yield out.file
        out.commit()
    except BaseException as exc:
        out.abort()
        if isinstance(exc, OSError):
            raise _cannot_write(url, path, exc) from None
        raise


@contextmanager
def atomic_path(path: str | Path, url: str | None = None):
    """Yield the temporary path to write (for writers that open it themselves); then as `atomic_write`."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(url, path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)   # only after a failure is anything left to remove
