"""What every storage backend provides, and the answer where a scheme cannot do something.

A backend is one object per URL scheme (`storage.registry.SCHEMES`).  Its properties replace the
`if scheme == ...` chains of the callers:

    remote        reached over a network: transient errors are retried, there is no listing
    seekable      can open at a byte offset (a ranged request); a pipe cannot
    local         a file on this machine: `local_path(url)` names it, readers may `pread` it in place
    can_write     `write_atomic`, `upload` and `delete` work
    runs_command  opening it runs a shell command: only with allow_pipe=True

`open(url, start, end, version=None)` returns (raw stream with `readinto`, total object size or None);
`ReadStream` wraps it with retries.  `version(raw)` is a token (an ETag) that pins a resumed read to
the same object; `None` where the scheme has none.
"""
from __future__ import annotations

from pathlib import Path

from fmashard.errors import NotFoundError, StorageError
from fmashard.storage.retry import RetryPolicy, with_retries

WRITABLE = "writing is supported to local folders and s3:// only"


class RangeNotSatisfiable(StorageError):
    """A Range request that starts at or after the end of the object (HTTP 416)."""

    def __init__(self, url: str, size: int | None):
        self.size = size
        super().__init__(url, f"range starts past the end of the object ({size} bytes)")


def total_size(content_range, content_length, start: int):
    """The object's size from a (ranged) response's Content-Range / Content-Length."""
    if content_range and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    return start + int(content_length) if content_length is not None else None


def range_header(start: int, end: int | None) -> str | None:
    if not start and end is None:
        return None
    return f"bytes={start}-" + ("" if end is None else str(end - 1))


class Backend:
    """Defaults: a remote, seekable, read-only scheme; override what differs."""

    label = ""            # how `check_scheme` lists it among the supported schemes ("" for none)
    remote = True
    seekable = True
    local = False
    can_write = False
    runs_command = False

    def open(self, url: str, start: int, end: int | None, version: str | None = None):
        raise NotImplementedError

    def version(self, raw) -> str | None:
        return None

    def local_path(self, url: str) -> Path | None:
        return None

    def size(self, url: str) -> int | None:
        """Open and close (with the retries of a stream): the size the response reports."""
        raw, total = with_retries(lambda: self.open(url, 0, None), url, RetryPolicy(), at=lambda: " at byte 0")
        raw.close()
        return total

    def exists(self, url: str) -> bool:
        try:
            self.size(url)
            return True
        except NotFoundError:
            return False

    def write_atomic(self, url: str, data: bytes) -> None:
        raise StorageError(url, WRITABLE)

    def upload(self, local: str | Path, url: str) -> None:
        raise StorageError(url, "upload_file expects an s3:// URL")

    def delete(self, url: str) -> None:
        raise StorageError(url, f"cannot delete: {WRITABLE}")

    def join(self, base: str, *parts: str) -> str:
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])

    def parent(self, url: str) -> str:
        return url.rsplit("/", 1)[0]
