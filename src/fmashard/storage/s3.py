"""s3://bucket/key: boto3 GetObject with Range (endpoint from AWS_ENDPOINT_URL), PutObject, multipart
upload, DeleteObject.

S3 credentials come from the standard AWS chain (env, profile, instance role); no message or log line
ever includes them.  boto3 is imported on first use, so a local-only run never pays for it.
"""
from __future__ import annotations

import io
import os
import threading
from urllib.parse import urlparse

from fmashard.errors import AuthError, NotFoundError, StorageError, UserError
from fmashard.storage.base import Backend, RangeNotSatisfiable, range_header, total_size
from fmashard.storage.retry import RetryPolicy, TransientError, read_timeout, with_retries

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
    """`--endpoint-url`: an S3-compatible server for this process and the workers it starts (through
    AWS_ENDPOINT_URL).  None or "" leaves the environment as it is; anything but http(s)://host[:port]
    is a one-line UserError."""
    if not url:
        return
    parsed = urlparse(url)
    try:
        port_ok = parsed.port is None or parsed.port > 0
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
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
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AuthError(url, "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, ClientError):
        return _client_error(url, exc.response)
    if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
        return TransientError(f"{type(exc).__name__}: {exc}")  # connection refused/reset, timeout
    one_line = " ".join(str(exc).split())
    if isinstance(exc, ParamValidationError):
        return StorageError(url, f"not a valid S3 object URL ({one_line})")
    return StorageError(url, f"{type(exc).__name__}: {one_line}")


def _client_error(url: str, response: dict) -> Exception:
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "InvalidRange" or status == 416:
        content_range = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-range")
        return RangeNotSatisfiable(url, total_size(content_range, None, 0))
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


def _request(url: str, fn):
    """A one-shot S3 call (head, put, upload, delete) with the same retries as a stream."""
    return with_retries(lambda: _s3_call(url, fn), url, RetryPolicy())


class S3Backend(Backend):
    label = "s3://"
    can_write = True

    def open(self, url, start, end, version=None):
        """GetObject of [start, end); `version` (the ETag of the first response) makes a resumed read
        fail with a clear error, instead of splicing two versions, if the object was replaced meanwhile."""
        bucket, key = split_s3(url)
        kwargs = {"Bucket": bucket, "Key": key}
        rng = range_header(start, end)
        if rng:
            kwargs["Range"] = rng
        if version:
            kwargs["IfMatch"] = version
        try:
            resp = _s3_call(url, lambda: s3_client().get_object(**kwargs))
        except RangeNotSatisfiable as exc:  # starts at/after the end: no bytes, as a local file
            return io.BytesIO(b""), exc.size
        total = total_size(resp.get("ContentRange"), resp.get("ContentLength"), start)
        return resp["Body"]._raw_stream, total  # urllib3 response: supports readinto, checks length

    def version(self, raw):
        return getattr(raw, "headers", {}).get("ETag")

    def size(self, url):
        bucket, key = split_s3(url)
        return int(_request(url, lambda: s3_client().head_object(Bucket=bucket, Key=key))["ContentLength"])

    def write_atomic(self, url, data):
        """PutObject is atomic by itself."""
        bucket, key = split_s3(url)
        _request(url, lambda: s3_client().put_object(Bucket=bucket, Key=key, Body=data))

    def upload(self, local, url):
        """Multipart upload for large files."""
        bucket, key = split_s3(url)
        _request(url, lambda: s3_client().upload_file(str(local), bucket, key))

    def delete(self, url):
        bucket, key = split_s3(url)
        _request(url, lambda: s3_client().delete_object(Bucket=bucket, Key=key))
