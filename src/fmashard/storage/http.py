"""http:// and https://: a streaming GET with a Range header; read-only."""
from __future__ import annotations

import io
import urllib.error
import urllib.request

from fmashard.errors import AuthError, NotFoundError, StorageError
from fmashard.storage.base import Backend, range_header, total_size
from fmashard.storage.retry import TransientError, read_timeout


class HttpBackend(Backend):
    label = "http(s)://"

    def open(self, url, start, end, version=None):
        rng = range_header(start, end)
        headers = {"Range": rng} if rng else {}
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=read_timeout())
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # the range starts at/after the end: no bytes, as a local file
                size = total_size(exc.headers.get("Content-Range"), None, start)
                return io.BytesIO(b""), start if size is None else size
            raise _http_error(url, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        if start and resp.status != 206:
            resp.close()
            raise StorageError(url, "server ignored the Range request (needs HTTP range support)")
        return resp, total_size(resp.headers.get("Content-Range"), resp.headers.get("Content-Length"), start)


def _http_error(url: str, code: int) -> Exception:
    if code == 404:
        return NotFoundError(url, "not found (HTTP 404)")
    if code in (401, 403):
        return AuthError(url, f"access denied (HTTP {code})")
    if code >= 500:
        return TransientError(f"HTTP {code}")
    return StorageError(url, f"HTTP {code}")
