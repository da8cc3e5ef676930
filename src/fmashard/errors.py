"""One error policy for the whole data path.

User errors (bad paths, bad arguments, unreadable metadata) are `UserError`: the CLI prints them on one
line and exits with code 2.  Data errors carry the shard URL and the sample key; the loader's
`on_error` policy ("raise" or "skip") decides whether they stop the run or are counted and skipped.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("fmashard")


class UserError(Exception):
    """Something the user can fix: printed as one line, exit code 2, no traceback."""

    def __reduce__(self):   # picklable as itself: a DataLoader worker hands it to the main process
        return _rebuilt, (type(self), str(self), dict(vars(self)))


def _rebuilt(cls, message: str, attrs: dict) -> UserError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc


class StorageError(UserError):
    """A URL could not be read or written (not found, denied, unreachable)."""

    def __init__(self, url: str, message: str):
        self.url = url
        super().__init__(f"{url}: {message}")


class NotFoundError(StorageError):
    pass


class AuthError(StorageError):
    pass


class EmptySplitError(UserError):
    """A manifest's split that holds no track (the build gave it none): `fmashard train` goes on without
    validation, everything else that needs the split stops with this one line."""


class DataError(UserError):
    """A shard or sample that is not what the manifest promised."""

    def __init__(self, url: str, key: str | None, message: str):
        self.url, self.key = url, key
        where = f"{url} key {key}" if key else url
        super().__init__(f"{where}: {message}")


class CorruptSampleError(DataError):
    """A sample is missing a member, has the wrong size, or its tar header is damaged."""


class DamagedHeaderError(CorruptSampleError):
    """A tar header failed its checksum: the reader resyncs at the next record boundary."""


class TruncatedShardError(DataError):
    """A shard ended before the samples the manifest promised."""


ON_ERROR_CHOICES = ("raise", "skip")


@dataclass
class ErrorPolicy:
    """`raise` stops at the first data error; `skip` counts it and goes on.  Skips are never silent:
    `summary()` reports them, and the loader logs the count at the end of every epoch."""

    mode: str = "raise"
    skipped: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.mode!r}")

    def handle(self, exc: DataError, lost: int = 1) -> None:
        """Re-raise in `raise` mode; otherwise record the error (and the `lost` samples it cost) and
        return so the caller skips."""
        if self.mode == "raise":
            raise exc
        self.skipped[type(exc).__name__] += lost
        if len(self.examples) < 20:
            self.examples.append(str(exc))
        log.warning("skipped: %s", exc)

    def handle_read(self, exc: DataError | StorageError, lost: int = 1) -> None:
        """`handle` for a failed read: a storage error that outlasted its retries stops the run as itself in
        raise mode; in skip mode it costs the samples it made unreadable, like a data error."""
        if not isinstance(exc, DataError):
            if self.mode == "raise":
                raise exc
            exc = DataError(exc.url, None, str(exc).removeprefix(f"{exc.url}: "))
        self.handle(exc, lost)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        if not self.num_skipped:
            return "no samples skipped"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
        return f"{self.num_skipped} samples skipped ({kinds})"
