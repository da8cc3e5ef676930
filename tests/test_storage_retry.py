"""The one retry loop: transient errors retried with backoff, the last one named with its URL, other
errors passed through at once; a stream cut mid-read resumes at the byte it reached, pinned to the
object version it began with."""
import pytest

from fmashard import storage
from fmashard.errors import NotFoundError, StorageError, UserError
from fmashard.storage import registry, retry
from fmashard.storage.base import Backend
from fmashard.storage.retry import RetryPolicy, TransientError, with_retries

FAST = RetryPolicy(attempts=3, backoff=0.001)


@pytest.fixture
def sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def failing(times, exc=None):
    exc = exc or TransientError("HTTP 503")
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "done"
    return fn, calls


def test_transient_errors_are_retried_until_the_call_succeeds(sleeps):
    fn, calls = failing(2)
    counted = []
    assert with_retries(fn, "s3://b/k", FAST, on_retry=lambda: counted.append(1)) == "done"
    assert len(calls) == 3 and len(counted) == 2 and len(sleeps) == 2


def test_after_the_last_retry_one_storage_error_names_the_url_and_the_place(sleeps):
    fn, calls = failing(10)
    with pytest.raises(StorageError) as info:
        with_retries(fn, "s3://b/k", FAST, what="read failed", at=lambda: " at byte 42")
    assert str(info.value) == "s3://b/k: read failed after 3 retries at byte 42: HTTP 503"
    assert len(calls) == FAST.attempts + 1 and len(sleeps) == FAST.attempts


def test_other_errors_pass_through_without_a_retry(sleeps):
    fn, calls = failing(1, NotFoundError("s3://b/k", "not found"))
    with pytest.raises(NotFoundError):
        with_retries(fn, "s3://b/k", FAST)
    assert len(calls) == 1 and sleeps == []


def test_policy_from_the_environment_and_its_backoff_bounds(monkeypatch):
    monkeypatch.setenv("FMASHARD_RETRIES", "4")
    monkeypatch.setenv("FMASHARD_BACKOFF", "0.5")
    policy = RetryPolicy()
    assert policy.attempts == 4 and policy.window() == 0.5 + 1 + 2 + 4
    assert all(0.25 * 2**a <= policy.delay(a) <= 0.5 * 2**a for a in range(4))
    assert 4 <= RetryPolicy(attempts=1, backoff=100).delay(0) <= 8   # capped at max_backoff
    monkeypatch.setenv("FMASHARD_RETRIES", "-1")
    with pytest.raises(UserError, match=r"^FMASHARD_RETRIES='-1': expected an integer >= 0$"):
        RetryPolicy()


class CutRaw:
    """A response body that dies with a connection reset after `cut` bytes."""

    def __init__(self, data, cut):
        self.data, self.cut, self.pos = data, cut, 0

    def readinto(self, mv):
        if self.cut is not None and self.pos >= self.cut:
            raise ConnectionResetError("connection reset by peer")
        stop = len(self.data) if self.cut is None else min(len(self.data), self.cut)
        n = min(len(mv), stop - self.pos)
        mv[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self):
        pass


class FlakyBackend(Backend):
    """Each open's body is cut after the next number of `cuts` bytes (None: whole)."""

    def __init__(self, data, cuts):
        self.data, self.cuts, self.opens = data, list(cuts), []

    def open(self, url, start, end, version=None):
        self.opens.append((start, version))
        return CutRaw(self.data[start:end], self.cuts.pop(0) if self.cuts else None), len(self.data)

    def version(self, raw):
        return "etag-1"


def test_a_cut_read_reopens_at_the_byte_it_reached_pinned_to_the_version(monkeypatch, sleeps):
    data = bytes(range(256)) * 40
    flaky = FlakyBackend(data, [1000, 3000])
    monkeypatch.setitem(registry.SCHEMES, "flaky", flaky)
    with storage.open_stream("flaky://b/blob", 100, retry=FAST) as stream:
        got = stream.read()
        assert stream.retries_used == 2
    assert got == data[100:]
    assert flaky.opens == [(100, None), (1100, "etag-1"), (4100, "etag-1")]


def test_a_read_that_keeps_failing_names_the_url_and_the_byte(monkeypatch, sleeps):
    monkeypatch.setitem(registry.SCHEMES, "flaky", FlakyBackend(bytes(5000), [700] + [0] * 10))
    with pytest.raises(StorageError) as info:
        storage.read_bytes("flaky://b/blob", retry=FAST)
    assert str(info.value) == ("flaky://b/blob: read failed after 3 retries at byte 700: "
                               "ConnectionResetError: connection reset by peer")
