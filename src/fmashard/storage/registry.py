"""The scheme registry: URL scheme -> the backend that implements it.  Adding a scheme is one backend
module and one line here; a URL with a scheme not listed is a one-line error naming it."""
from __future__ import annotations

import re
from urllib.parse import urlparse

from fmashard.errors import UserError
from fmashard.storage.base import Backend
from fmashard.storage.http import HttpBackend
from fmashard.storage.local import LocalBackend
from fmashard.storage.pipe import PipeBackend
from fmashard.storage.s3 import S3Backend

LOCAL, _HTTP = LocalBackend(), HttpBackend()   # LOCAL also serves plain paths (no scheme)
SCHEMES: dict[str, Backend] = {
    "file": LOCAL,
    "http": _HTTP,
    "https": _HTTP,
    "s3": S3Backend(),
    "pipe": PipeBackend(),    # `pipe:cmd`, no `//`
}
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _unsupported(url: str, name: str) -> UserError:
    labels = list(dict.fromkeys(b.label for b in (LOCAL, *SCHEMES.values()) if b.label))
    return UserError(f"{url}: unsupported URL scheme {name!r} (supported: {', '.join(labels)})")


def scheme_of(url: str) -> str:
    """The registry key of `url`: "local" for a plain path; a UserError for a scheme not registered
    (gs://, ftp://), which would otherwise be taken for a local path."""
    url = str(url)
    if url.startswith("pipe:"):
        return "pipe"
    found = _URL_SCHEME.match(url)
    if found:
        if found.group(1).lower() not in SCHEMES:
            raise _unsupported(url, found.group(1))
        return found.group(1).lower()
    scheme = urlparse(url).scheme
    return scheme if scheme in SCHEMES else "local"


def backend_for(url: str) -> Backend:
    scheme = scheme_of(url)
    return LOCAL if scheme == "local" else SCHEMES[scheme]


def check_scheme(url: str) -> str:
    """`url` as a string, or the UserError naming a URL scheme fmashard cannot read."""
    scheme_of(url)
    return str(url)
