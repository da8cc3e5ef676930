"""The one retry loop of the storage layer: transient errors retried with exponential backoff and jitter.

The policy comes from the environment when it is built: FMASHARD_RETRIES (retries, default 6),
FMASHARD_BACKOFF (first delay in seconds, default 0.5, doubling up to 8 s); FMASHARD_TIMEOUT (seconds a
remote read may stall, default 30) is read by the backends.  Only a `TransientError` is retried: a
backend turns connection resets, timeouts and 5xx answers into one, and never a not-found or a denial.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

from fmashard.errors import StorageError, UserError, log


def _env_number(name: str, default: str, kind=float, minimum: float = 0):
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UserError(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'} >= {minimum}")
    return value


def read_timeout() -> float:
    """Seconds a remote read may stall before it counts as a transient error (FMASHARD_TIMEOUT)."""
    return _env_number("FMASHARD_TIMEOUT", "30", float, 0.1)


@dataclass(frozen=True)
class RetryPolicy:
    """Read when constructed: `RetryPolicy()` follows FMASHARD_RETRIES / FMASHARD_BACKOFF."""

    attempts: int = field(default_factory=lambda: _env_number("FMASHARD_RETRIES", "6", int))
    backoff: float = field(default_factory=lambda: _env_number("FMASHARD_BACKOFF", "0.5", float))
    max_backoff: float = 8.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2)  # jitter: spread retries of many workers

    def window(self) -> float:
        """Total backoff before giving up, jitter aside (with jitter: 50-100% of this).  An outage
        shorter than half of it is always survived."""
        return sum(min(self.max_backoff, self.backoff * 2**a) for a in range(self.attempts))


class TransientError(Exception):
    """A failure worth retrying (connection reset, timeout, 5xx, early end of body)."""


def describe(exc: Exception) -> str:
    """`Type: message` on one line, shortened (URLs and hosts only: no request headers are included)."""
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, TransientError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def with_retries(fn, url: str, retry: RetryPolicy, *, what: str = "failed", at=None, reopening: bool = False,
                 on_retry=None):
    """`fn()`, called again after each `TransientError` until `retry.attempts` retries are spent; then a
    one-line `StorageError` naming the URL.  `at()` says where in the object (" at byte N"), `on_retry()`
    counts; every other exception passes through untouched."""
    for attempt in range(retry.attempts + 1):
        try:
            return fn()
        except TransientError as exc:
            where = at() if at else ""
            if attempt == retry.attempts:
                raise StorageError(url, f"{what} after {attempt} retries{where}: {describe(exc)}") from None
            if on_retry:
                on_retry()
            note = f"reopening (retry {attempt + 1})" if reopening else f"retry {attempt + 1}"
            log.warning("%s: %s%s; %s", url, describe(exc), where, note)
            time.sleep(retry.delay(attempt))
