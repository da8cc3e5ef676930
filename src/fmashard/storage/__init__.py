"""Source stage: storage chosen by URL scheme behind one small interface.

    local path / file://   -> unbuffered file, seek to the start offset
    http:// https://       -> streaming GET with a Range header
    s3://bucket/key        -> boto3 GetObject with Range (endpoint from AWS_ENDPOINT_URL)
    pipe:cmd               -> only with allow_pipe=True: a manifest must never run a command

Every stream is a `ReadStream`: `readinto` that, on a transient error (connection reset, timeout,
5xx), reopens the object at the byte offset it had reached (a Range request) with exponential backoff
and jitter, so a retried read never loses or repeats a byte.  After the last retry it raises a
`StorageError` naming the URL.  Not-found and permission errors are never retried.  One-shot S3 calls
(head, put, upload, delete) retry the same way.  The policy comes from the environment when a stream is
opened: FMASHARD_RETRIES (retries, default 6), FMASHARD_BACKOFF (first delay in seconds, default 0.5,
doubling up to 8 s) and FMASHARD_TIMEOUT (seconds a remote read may stall, default 30).

S3 credentials come from the standard AWS chain (env, profile, instance role); no message or log line
ever includes them.
"""
from __future__ import annotations

import io
import os
import random
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from fmashard.errors import AuthError, NotFoundError, StorageError, UserError, log

REMOTE_SCHEMES = ("http", "https", "s3")
PIPE_REFUSAL = ("pipe: URLs run a shell command; they are accepted only from Python, with allow_pipe=True "
                "(fmashard.data.loader.LoaderConfig, fmashard.data.sources.resolve_source)")


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


DEFAULT_RETRY = RetryPolicy(attempts=6, backoff=0.5)  # the built-in defaults; streams use RetryPolicy()


class TransientError(Exception):
    """A failure worth retrying (connection reset, timeout, 5xx, early end of body)."""


class RangeNotSatisfiable(StorageError):
    """A Range request that starts at or after the end of the object (HTTP 416)."""

    def __init__(self, url: str, size: int | None):
        self.size = size
        super().__init__(url, f"range starts past the end of the object ({size} bytes)")


def scheme_of(url: str) -> str:
    if url.startswith("pipe:"):
        return "pipe"
    parsed = urlparse(str(url))
    return parsed.scheme if parsed.scheme in ("file", *REMOTE_SCHEMES) else "local"


def check_scheme(url: str) -> str:
    """`url` as a string, or a UserError naming a URL scheme fmashard cannot read (gs://, ftp://, ...),
    which `scheme_of` would otherwise take for a local path."""
    found = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", str(url))
    if found and found.group(1).lower() not in ("file", *REMOTE_SCHEMES):
        raise UserError(f"{url}: unsupported URL scheme {found.group(1)!r} "
                        "(supported: local paths, file://, http(s)://, s3://)")
    return str(url)


def is_remote(url: str) -> bool:
    return scheme_of(str(url)) in REMOTE_SCHEMES


def local_path(url: str) -> Path:
    url = str(url)
    return Path(urlparse(url).path) if url.startswith("file://") else Path(url)


def join_url(base: str, *parts: str) -> str:
    base = str(base)
    if scheme_of(base) == "local":
        return str(Path(base).joinpath(*parts))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def parent_url(url: str) -> str:
    url = str(url)
    if scheme_of(url) == "local":
        return str(Path(url).parent)
    return url.rsplit("/", 1)[0]


# ---------------------------------------------------------------- s3 client (lazy, per process)
_s3: dict = {}
_s3_lock = threading.Lock()


def _after_fork_in_child() -> None:  # a fork while another thread held the lock must not deadlock
    global _s3_lock
    _s3_lock = threading.Lock()
    _s3.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "FMASHARD_TIMEOUT")


def set_endpoint_url(url: str | None) -> None:
    """`--endpoint-url`: an S3-compatible server for this process and the workers it starts."""
    if url:
        if urlparse(url).scheme not in ("http", "https"):
            raise UserError(f"--endpoint-url {url!r}: expected http://host:port or https://host:port")
        os.environ["AWS_ENDPOINT_URL"] = url


def s3_client():
    """One boto3 client per process (clients are thread-safe, but not fork-safe: a forked DataLoader
    worker builds its own), rebuilt when the AWS environment changes.  Endpoint from AWS_ENDPOINT_URL,
    credentials from the standard AWS chain.  botocore's own retries are off: `RetryPolicy` is the only
    retry layer, so FMASHARD_RETRIES and FMASHARD_BACKOFF alone set how long an outage is survived."""
    key = (os.getpid(), hash(tuple(os.environ.get(name) for name in _AWS_ENV)))
    with _s3_lock:
        if _s3.get("key") != key:
            import boto3
            from botocore.config import Config

            config = Config(retries={"total_max_attempts": 1}, connect_timeout=min(5.0, read_timeout()),
                            read_timeout=read_timeout(), max_pool_connections=32, s3={"addressing_style": "path"})
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            _s3["client"] = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
            _s3["key"] = key
        return _s3["client"]


def split_s3(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def s3_error(url: str, exc: Exception) -> Exception:
    """Rewrite a botocore error into one a user can act on (never echoing credentials)."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ParamValidationError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AuthError(url, "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "InvalidRange" or status == 416:
            content_range = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-range")
            return RangeNotSatisfiable(url, _total_size(content_range, None, 0))
        if code == "PreconditionFailed" or status == 412:
            return StorageError(url, "the object was replaced while it was being read (ETag changed); "
                                     "read it again from the start")
        if code == "NoSuchBucket":
            return NotFoundError(url, f"bucket {split_s3(url)[0]!r} does not exist")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return NotFoundError(url, "not found")
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "ExpiredToken",
                    "InvalidToken", "403") or status in (401, 403):
            return AuthError(url, f"access denied ({code or status}): check the AWS credentials")
        if status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
            return TransientError(f"{code} {status}")
        return StorageError(url, f"S3 error {code or status}")
    if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
        return TransientError(f"{type(exc).__name__}: {exc}")  # connection refused/reset, timeout
    one_line = " ".join(str(exc).split())
    if isinstance(exc, ParamValidationError):
        return StorageError(url, f"not a valid S3 object URL ({one_line})")
    return StorageError(url, f"{type(exc).__name__}: {one_line}")


def _s3_call(url: str, fn):
    """One S3 request; errors rewritten (TransientError is left to the caller's retry loop)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(url, exc) from None
    except S3UploadFailedError as exc:  # boto3's transfer manager wraps the ClientError
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (ClientError, BotoCoreError)):
            raise s3_error(url, cause) from None
        raise TransientError(type(exc).__name__) from None
    except (ConnectionError, OSError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from None


def _s3_request(url: str, fn, retry: RetryPolicy | None = None):
    """A one-shot S3 call (head, put, upload, delete) with the same retries as a stream."""
    retry = retry or RetryPolicy()
    for attempt in range(retry.attempts + 1):
        try:
            return _s3_call(url, fn)
        except TransientError as exc:
            if attempt == retry.attempts:
                raise StorageError(url, f"failed after {attempt} retries: {exc}") from None
            log.warning("%s: %s; retry %d", url, exc, attempt + 1)
            time.sleep(retry.delay(attempt))


# ---------------------------------------------------------------- opening a byte range
def open_local(url: str):
    """An unbuffered binary file for a local path or file:// URL; errors name the URL."""
    try:
        return open(local_path(url), "rb", buffering=0)
    except FileNotFoundError:
        raise NotFoundError(url, "no such file") from None
    except PermissionError:
        raise AuthError(url, "permission denied") from None
    except IsADirectoryError:
        raise StorageError(url, "is a folder, expected a file") from None


def _open_local(url: str, start: int, end: int | None):
    f = open_local(url)
    if start:
        f.seek(start)
    return f, os.fstat(f.fileno()).st_size


def _open_http(url: str, start: int, end: int | None):
    headers = {}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=read_timeout())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(url, "not found (HTTP 404)") from None
        if exc.code == 416:  # the range starts at/after the end: no bytes, as a local file
            size = _total_size(exc.headers.get("Content-Range"), None, start)
            return io.BytesIO(b""), start if size is None else size
        if exc.code in (401, 403):
            raise AuthError(url, f"access denied (HTTP {exc.code})") from None
        if exc.code >= 500:
            raise TransientError(f"HTTP {exc.code}") from None
        raise StorageError(url, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from None
    if start and resp.status != 206:
        resp.close()
        raise StorageError(url, "server ignored the Range request (needs HTTP range support)")
    total = _total_size(resp.headers.get("Content-Range"), resp.headers.get("Content-Length"), start)
    return resp, total


def _total_size(content_range, content_length, start: int):
    if content_range and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    return start + int(content_length) if content_length is not None else None


def _open_s3(url: str, start: int, end: int | None, if_match: str | None = None):
    """GetObject of [start, end); `if_match` (the ETag of the first response) makes a resumed read
    fail with a clear error, instead of splicing two versions, if the object was replaced meanwhile."""
    bucket, key = split_s3(url)
    kwargs = {"Bucket": bucket, "Key": key}
    if start or end is not None:
        kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
    if if_match:
        kwargs["IfMatch"] = if_match
    try:
        resp = _s3_call(url, lambda: s3_client().get_object(**kwargs))
    except RangeNotSatisfiable as exc:  # starts at/after the end: no bytes, as a local file
        return io.BytesIO(b""), exc.size
    total = _total_size(resp.get("ContentRange"), resp.get("ContentLength"), start)
    return resp["Body"]._raw_stream, total  # urllib3 response: supports readinto, checks length


def _open_pipe(url: str, start: int, end: int | None):
    if start:   # refused before the command runs
        raise StorageError(url, "pipe: sources cannot start mid-stream")
    proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)  # noqa: S602
    return proc.stdout, None


OPENERS = {"local": _open_local, "file": _open_local, "http": _open_http, "https": _open_http,
           "s3": _open_s3, "pipe": _open_pipe}


def _describe(exc: Exception) -> str:
    """`Type: message` on one line, shortened (URLs and hosts only: no request headers are included)."""
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, TransientError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ReadStream:
    """A byte stream over [start, end) of one object that survives transient errors."""

    def __init__(self, url: str, start: int = 0, end: int | None = None, *,
                 retry: RetryPolicy | None = None, allow_pipe: bool = False):
        self.url, self.pos, self.end = str(url), start, end
        self.retry = retry or RetryPolicy()
        self.scheme = scheme_of(self.url)
        if self.scheme == "pipe" and not allow_pipe:
            raise StorageError(self.url, PIPE_REFUSAL)
        self.retries_used = 0
        self._raw, self.total = self._with_retries(lambda: OPENERS[self.scheme](self.url, self.pos, self.end))
        self._etag = getattr(self._raw, "headers", {}).get("ETag") if self.scheme == "s3" else None

    def _with_retries(self, fn):
        for attempt in range(self.retry.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                if attempt == self.retry.attempts:
                    raise StorageError(self.url, f"failed after {attempt} retries at byte {self.pos}: {exc}") from None
                self.retries_used += 1
                log.warning("%s: %s; retry %d at byte %d", self.url, exc, attempt + 1, self.pos)
                time.sleep(self.retry.delay(attempt))

    def _reopen(self):
        self._close_raw()
        pinned = {"if_match": self._etag} if self._etag else {}
        self._raw, total = OPENERS[self.scheme](self.url, self.pos, self.end, **pinned)
        if total is not None:
            self.total = total

    def readinto(self, buf) -> int:
        """Read up to len(buf) bytes; 0 only at the true end of the range."""
        mv = memoryview(buf).cast("B")
        if self.end is not None:
            mv = mv[: max(0, self.end - self.pos)]
        if not len(mv):
            return 0
        cause, reopen_failed = None, False
        for attempt in range(self.retry.attempts + 1):
            try:
                n = self._raw.readinto(mv)
                if n == 0 and self.total is not None and self.pos < min(self.total, self.end or self.total):
                    raise TransientError("connection closed before the end of the object")
                self.pos += n
                return n
            except Exception as exc:  # noqa: BLE001 - classified below
                if self.scheme in ("local", "file", "pipe") or isinstance(exc, StorageError):
                    raise
                if not (reopen_failed and isinstance(exc, TransientError)):
                    cause = exc   # after a failed reopen, the reopen's error says more than the dead stream
                if attempt == self.retry.attempts:
                    raise StorageError(self.url, f"read failed after {attempt} retries at byte {self.pos}: "
                                                 f"{_describe(cause)}") from None
                self.retries_used += 1
                log.warning("%s: %s at byte %d; reopening (retry %d)", self.url, _describe(cause),
                            self.pos, attempt + 1)
                time.sleep(self.retry.delay(attempt))
                try:
                    self._reopen()
                    reopen_failed = False
                except TransientError as reopen_exc:
                    cause, reopen_failed = reopen_exc, True

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
        if self.scheme in ("local", "file"):
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


def open_stream(url: str, start: int = 0, end: int | None = None, **kwargs) -> ReadStream:
    return ReadStream(url, start, end, **kwargs)


def read_bytes(url: str, **kwargs) -> bytes:
    with open_stream(url, **kwargs) as stream:
        return stream.read()


def object_size(url: str) -> int:
    url = str(url)
    scheme = scheme_of(url)
    if scheme in ("local", "file"):
        try:
            return local_path(url).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(url, "no such file") from None
    if scheme == "s3":
        bucket, key = split_s3(url)
        return int(_s3_request(url, lambda: s3_client().head_object(Bucket=bucket, Key=key))["ContentLength"])
    with open_stream(url) as stream:
        return stream.total


def exists(url: str) -> bool:
    try:
        object_size(url)
        return True
    except NotFoundError:
        return False


# ---------------------------------------------------------------- writing (build output)
def write_bytes_atomic(url: str, data: bytes) -> None:
    """Local: write to a temporary name, fsync, rename.  S3: PutObject is atomic by itself."""
    url = str(url)
    if scheme_of(url) == "s3":
        bucket, key = split_s3(url)
        _s3_request(url, lambda: s3_client().put_object(Bucket=bucket, Key=key, Body=data))
        return
    if is_remote(url):
        raise StorageError(url, "writing is supported to local folders and s3:// only")
    path = local_path(url)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(url, f"cannot write ({exc.strerror or exc})") from None


def upload_file(local: str | Path, url: str) -> None:
    """Copy a finished local file to its destination URL (multipart upload for large files on S3)."""
    url = str(url)
    if scheme_of(url) != "s3":
        raise StorageError(url, "upload_file expects an s3:// URL")
    bucket, key = split_s3(url)
    _s3_request(url, lambda: s3_client().upload_file(str(local), bucket, key))


def delete(url: str) -> None:
    url = str(url)
    if scheme_of(url) == "s3":
        bucket, key = split_s3(url)
        _s3_request(url, lambda: s3_client().delete_object(Bucket=bucket, Key=key))
    else:
        local_path(url).unlink(missing_ok=True)
