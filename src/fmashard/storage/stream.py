"""`ReadStream`: a byte stream over [start, end) of one object that survives transient errors.

On a transient error of a remote backend (connection reset, timeout, 5xx, early end of body) `readinto`
reopens the object at the byte offset it had reached (a Range request, pinned to the same object version
where the backend has one) through `retry.with_retries`, so a retried read never loses or repeats a byte;
after the last retry it raises a `StorageError` naming the URL.  Local files and pipes are not retried.
"""
from __future__ import annotations

import os

from fmashard.errors import StorageError
from fmashard.storage.pipe import PIPE_REFUSAL
from fmashard.storage.registry import backend_for
from fmashard.storage.retry import RetryPolicy, TransientError, describe, with_retries


class ReadStream:
    def __init__(self, url: str, start: int = 0, end: int | None = None, *,
                 retry: RetryPolicy | None = None, allow_pipe: bool = False):
        self.url, self.pos, self.end = str(url), start, end
        self.retry = retry or RetryPolicy()
        self.backend = backend_for(self.url)
        if self.backend.runs_command and not allow_pipe:
            raise StorageError(self.url, PIPE_REFUSAL)
        self.retries_used = 0
        self._raw, self.total = self._retried(self._open, "failed")
        self._version = self.backend.version(self._raw)
        self._broken = False

    def _retried(self, fn, what: str, reopening: bool = False):
        return with_retries(fn, self.url, self.retry, what=what, at=lambda: f" at byte {self.pos}",
                            reopening=reopening, on_retry=self._count_retry)

    def _count_retry(self) -> None:
        self.retries_used += 1

    def _open(self):
        return self.backend.open(self.url, self.pos, self.end)

    def _reopen(self) -> None:
        self._close_raw()
        self._raw, total = self.backend.open(self.url, self.pos, self.end, self._version)
        if total is not None:
            self.total = total

    def _read_once(self, mv) -> int:
        n = self._raw.readinto(mv)
        if n == 0 and self.total is not None and self.pos < min(self.total, self.end or self.total):
            raise TransientError("connection closed before the end of the object")
        self.pos += n
        return n

    def _read_attempt(self, mv) -> int:
        """One try: reopen a broken stream (its TransientError is the attempt's), then read; any read
        error but a StorageError counts as transient."""
        if self._broken:
            self._reopen()
            self._broken = False
        try:
            return self._read_once(mv)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a remote read's failure is worth a reopen
            self._broken = True
            raise TransientError(describe(exc)) from None

    def readinto(self, buf) -> int:
        """Read up to len(buf) bytes; 0 only at the true end of the range."""
        mv = memoryview(buf).cast("B")
        if self.end is not None:
            mv = mv[: max(0, self.end - self.pos)]
        if not len(mv):
            return 0
        if not self.backend.remote:   # a local file or a pipe: its errors are not transient
            return self._read_once(mv)
        return self._retried(lambda: self._read_attempt(mv), "read failed", reopening=True)

    def read_exact_into(self, buf) -> int:
        """Fill buf completely unless the range ends first; returns the bytes read."""
        mv, got = memoryview(buf).cast("B"), 0
        while got < len(mv):
            n = self.readinto(mv[got:])
            if n == 0:
                break
            got += n
        return got

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        buf = bytearray(n)
        got = self.read_exact_into(buf)
        return bytes(buf[:got])

    def skip(self, n: int) -> int:
        """Advance n bytes: a seek for local files, a read-and-discard otherwise."""
        if self.backend.local:
            limit = min(x for x in (self.total, self.end) if x is not None)
            n = max(0, min(n, limit - self.pos))
            self._raw.seek(n, os.SEEK_CUR)
            self.pos += n
            return n
        scratch, done = bytearray(min(n, 1 << 20)), 0
        while done < n:
            got = self.read_exact_into(memoryview(scratch)[: min(len(scratch), n - done)])
            if not got:
                break
            done += got
        return done

    def _close_raw(self):
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
            pass

    def close(self):
        self._close_raw()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
