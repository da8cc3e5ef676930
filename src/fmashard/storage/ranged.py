"""`open_ranged`: a read-only, seekable file over one object, read in ranged pieces.

    with storage.open_ranged("s3://bucket/track.ogg") as f:   # a buffered file: read, seek, tell
        info = soundfile.info(f)                               # reads the header (and what it seeks to)

For a reader that seeks (an audio header, a trailer, an index) where downloading the whole object would be
the cost: each buffer refill is one ranged `ReadStream` (so transient errors are retried like every read),
and the raw file counts what it fetched (`.raw.reads`, `.raw.bytes_read`).  A local path is opened as it is.
"""
from __future__ import annotations

import io
import os

from fmashard.storage.registry import backend_for
from fmashard.storage.stream import ReadStream

BUFFER = 256 * 1024   # bytes per ranged read: a header in one request, a scan in few


class RangedFile(io.RawIOBase):
    """The raw file under `open_ranged`'s buffer: `size` bytes of `url`, one ranged read per `readinto`."""

    def __init__(self, url: str, size: int):
        super().__init__()
        self.url, self.size = str(url), size
        self.pos = self.reads = self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self.url}: seek to a negative offset ({base + offset})")
        self.pos = base + offset
        return self.pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self.size - self.pos))
        if n == 0:
            return 0
        with ReadStream(self.url, self.pos, self.pos + n) as stream:
            got = stream.read_exact_into(memoryview(buf)[:n])
        self.pos += got
        self.reads += 1
        self.bytes_read += got
        return got


def open_ranged(url: str, buffer_size: int = BUFFER):
    """A buffered, seekable binary file over `url` (a local path: the file itself; an object of unknown
    size, or a backend that cannot seek: its bytes, read whole)."""
    backend = backend_for(str(url))
    local = backend.local_path(str(url))
    if local is not None:
        return open(local, "rb")
    size = backend.size(str(url)) if backend.seekable else None
    if size is None:
        with ReadStream(str(url)) as stream:
            return io.BytesIO(stream.read())
    return io.BufferedReader(RangedFile(url, size), buffer_size)
