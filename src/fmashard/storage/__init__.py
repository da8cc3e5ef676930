"""Source stage: storage chosen by URL scheme behind one small interface.

    local path / file://   -> storage/local.py: unbuffered file, seek to the start offset
    http:// https://       -> storage/http.py: streaming GET with a Range header (read-only)
    s3://bucket/key        -> storage/s3.py: boto3 GetObject with Range (endpoint from AWS_ENDPOINT_URL)
    pipe:cmd               -> storage/pipe.py: only with allow_pipe=True, a manifest must never run a command

`registry.SCHEMES` maps a scheme to its backend; an unknown scheme (gs://, ftp://) is a one-line
UserError naming it.  Callers ask the backend's properties (`backend_for(url).remote`, `.seekable`,
`.local`, `.can_write`) instead of comparing scheme names.  Every read is a `ReadStream` (stream.py),
whose transient errors are retried by the one loop in retry.py (`RetryPolicy` from FMASHARD_RETRIES /
FMASHARD_BACKOFF / FMASHARD_TIMEOUT); one-shot S3 calls retry the same way.  Every local write goes
through atomic.py (`name.tmp-<pid>`, fsync, rename).  `open_ranged` (ranged.py): a seekable file over
an object for readers that seek (audio headers), fetched in ranged pieces.  The functions below dispatch
through the registry.
"""
from __future__ import annotations

import json
from pathlib import Path

from fmashard.storage.atomic import AtomicFile, atomic_path, atomic_write, temp_name
from fmashard.storage.base import Backend, RangeNotSatisfiable
from fmashard.storage.local import open_local
from fmashard.storage.pipe import PIPE_REFUSAL
from fmashard.storage.ranged import RangedFile, open_ranged
from fmashard.storage.registry import SCHEMES, backend_for, check_scheme, scheme_of
from fmashard.storage.retry import RetryPolicy, TransientError, read_timeout, with_retries
from fmashard.storage.s3 import s3_client, set_endpoint_url, split_s3
from fmashard.storage.stream import ReadStream

__all__ = [
    "PIPE_REFUSAL", "SCHEMES", "AtomicFile", "Backend", "RangeNotSatisfiable", "RangedFile", "ReadStream",
    "RetryPolicy",
    "TransientError", "atomic_path", "atomic_write", "backend_for", "check_scheme", "delete", "exists",
    "is_remote", "join_url", "local_path", "object_size", "open_local", "open_ranged", "open_stream", "parent_url",
    "read_bytes", "read_timeout", "s3_client", "scheme_of", "set_endpoint_url", "split_s3", "temp_name",
    "upload_file", "with_retries", "write_bytes_atomic", "write_json",
]


def is_remote(url: str) -> bool:
    return backend_for(str(url)).remote


def local_path(url: str) -> Path | None:
    """The file a local path or file:// URL names; None for any other scheme."""
    return backend_for(str(url)).local_path(str(url))


def join_url(base: str, *parts: str) -> str:
    return backend_for(str(base)).join(str(base), *parts)


def parent_url(url: str) -> str:
    return backend_for(str(url)).parent(str(url))


def open_stream(url: str, start: int = 0, end: int | None = None, **kwargs) -> ReadStream:
    return ReadStream(url, start, end, **kwargs)


def read_bytes(url: str, **kwargs) -> bytes:
    with open_stream(url, **kwargs) as stream:
        return stream.read()


def object_size(url: str) -> int:
    return backend_for(str(url)).size(str(url))


def exists(url: str) -> bool:
    return backend_for(str(url)).exists(str(url))


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Local: a temporary name, fsync, rename.  S3: PutObject is atomic by itself.  Elsewhere: refused."""
    backend_for(str(url)).write_atomic(str(url), data)


def write_json(url: str | Path, obj, *, indent: int | None = 1, sort_keys: bool = False) -> None:
    """`obj` as JSON text plus a newline, written atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(str(url), (json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n").encode())


def upload_file(local: str | Path, url: str) -> None:
    """Copy a finished local file to its destination URL (multipart upload for large files on S3)."""
    backend_for(str(url)).upload(local, str(url))


def delete(url: str) -> None:
    backend_for(str(url)).delete(str(url))
