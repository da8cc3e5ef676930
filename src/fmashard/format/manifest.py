"""`manifest.json`: the one reader (format and format_version checked, every listed path confined to
the manifest's folder) and the writer's serialisation.  The schema is in ARCHITECTURE.md ("Shard
format"); `shard_tools.build_manifest.make_manifest` assembles a build's manifest.
"""
from __future__ import annotations

import json
import re

from fmashard import storage
from fmashard.errors import NotFoundError, UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fmashard"
FORMAT_VERSION = 1          # what this fmashard writes
FORMAT_VERSIONS = (1,)      # the manifest versions this fmashard reads
_SCHEME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def manifest_url(source: str) -> str:
    """A manifest's URL from a build folder / prefix or the manifest's own URL."""
    return source if source.endswith(".json") else storage.join_url(source, MANIFEST_NAME)


def load_manifest(url: str, invalid: type[UserError] = UserError, check_paths: bool = True) -> dict:
    """The manifest at `url`, parsed and checked (`check_manifest`).  A missing one is a NotFoundError;
    one that is not JSON or not a manifest this fmashard reads is an `invalid` (one line naming `url`)."""
    url = storage.check_scheme(url)
    try:
        raw = storage.read_bytes(url)
    except NotFoundError:
        raise NotFoundError(url, "no manifest.json here (build shards with `fmashard build`)") from None
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"{url}: not a JSON manifest ({exc})") from None
    return check_manifest(url, manifest, invalid, check_paths)


def check_manifest(url: str, manifest, invalid: type[UserError] = UserError, check_paths: bool = True) -> dict:
    """`manifest` if this fmashard can read it and (with `check_paths`) all its paths stay in its
    folder; else an `invalid` (a path outside: a UserError)."""
    problem = manifest_problem(manifest)
    if problem:
        raise invalid(f"{url}: {problem}")
    if check_paths:
        for rel in listed_paths(manifest):
            member_url(url, rel)
    return manifest


def manifest_problem(manifest) -> str | None:
    """What makes `manifest` (parsed JSON) not a manifest this fmashard can read, or None."""
    if not isinstance(manifest, dict):
        return f"not an fmashard manifest (a JSON {_json_type(manifest)}, expected an object)"
    if manifest.get("format") != MANIFEST_FORMAT:
        if "format" not in manifest:
            return "not an fmashard manifest (no format field)"
        return f"not an fmashard manifest (format is {manifest['format']!r}, expected {MANIFEST_FORMAT!r})"
    version = manifest.get("format_version")
    if type(version) is not int or version not in FORMAT_VERSIONS:
        known = ", ".join(map(str, FORMAT_VERSIONS))
        return (f"format_version {version!r} is not one this fmashard reads ({known}); "
                "rebuild the shards with this fmashard, or use the version that wrote them")
    if not isinstance(manifest.get("splits"), dict):
        if "splits" not in manifest:
            return "not an fmashard manifest (no splits field)"
        return f"not an fmashard manifest (splits is a {_json_type(manifest['splits'])}, expected an object)"
    return None


def _json_type(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), "number"
                                                                              if value is not None else "null")


def listed_paths(manifest: dict) -> list[str]:
    """Every shard, .idx and .pt path a (valid) manifest lists."""
    entries = [e for split in manifest["splits"].values() if isinstance(split, dict)
               for key in ("shards", "files") for e in split.get(key) or [] if isinstance(e, dict)]
    return [e[k] for e in entries for k in ("path", "index") if k in e]


def is_inside(rel) -> bool:
    """A manifest path must be relative and stay in the manifest's folder or prefix: no `/...`, no
    `..`, no `scheme:` (another host, bucket or a pipe: command)."""
    if not isinstance(rel, str) or not rel.strip():
        return False
    norm = rel.replace("\\", "/")
    return not (norm.startswith("/") or _SCHEME_LIKE.match(norm) or ".." in norm.split("/"))


def member_url(manifest_url: str, rel) -> str:
    """The URL of a file the manifest lists; a UserError for one outside the manifest's folder."""
    if not is_inside(rel):
        raise UserError(f"{manifest_url}: path {rel!r} is outside the manifest's folder (manifest paths must "
                        "be relative, without '..')")
    return storage.join_url(storage.parent_url(manifest_url), rel)


def dump_manifest(manifest: dict) -> str:
    """The manifest's bytes as the build writes them (indent 1, a final newline)."""
    return json.dumps(manifest, indent=1) + "\n"
