"""Source stage: whatever the user points at -> a `DatasetSpec` (the shards of one split and their layout).

Accepted: a manifest (`.../manifest.json`, any scheme), a folder or prefix holding `manifest.json`, a
folder of `.tar` files, a brace-expanded pattern (`shards/train-{000000..000009}.tar`), or a list of
shard URLs.  Without a manifest the record layout is read from the first shard's headers and the
sample counts from the object sizes (our records have a fixed size).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from braceexpand import braceexpand

from fmashard import storage
from fmashard.errors import DataError, NotFoundError, UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fmashard"
FORMAT_VERSIONS = (1,)  # the manifest versions this fmashard reads (ARCHITECTURE.md "Shard format")
_SCHEME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
AUDIO_DTYPES = {"pcm16": ("pcm", "int16", 2), "f16": ("f16", "float16", 2)}
TAR_END = 1024


@dataclass(frozen=True)
class ShardInfo:
    url: str
    num_samples: int
    crc32: tuple[int, ...] | None = None   # of each sample's audio, from the manifest (the build's record)


@dataclass(frozen=True)
class DatasetSpec:
    """One split's shards and the fixed layout of their records."""

    shards: tuple[ShardInfo, ...]
    record_bytes: int
    clip_samples: int
    codec: str = "pcm16"
    sample_rate: int = 22050
    vocabulary: tuple[str, ...] | None = None
    split: str | None = None
    manifest: dict = field(default=None, compare=False, repr=False)

    @property
    def audio_ext(self) -> str:
        return AUDIO_DTYPES[self.codec][0]

    @property
    def dtype(self) -> str:
        return AUDIO_DTYPES[self.codec][1]

    @property
    def sample_bytes(self) -> int:
        return self.clip_samples * AUDIO_DTYPES[self.codec][2]

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)


def load_manifest(url: str) -> dict:
    url = storage.check_scheme(url)
    try:
        raw = storage.read_bytes(url)
    except NotFoundError:
        raise NotFoundError(url, "no manifest.json here (build shards with `fmashard build`)") from None
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{url}: not a JSON manifest ({exc})") from None
    return check_manifest(url, manifest)


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


def check_manifest(url: str, manifest) -> dict:
    """`manifest` if this fmashard can read it and all its paths stay in its folder; else a UserError."""
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{url}: {problem}")
    for rel in listed_paths(manifest):
        member_url(url, rel)
    return manifest


def spec_from_manifest(url: str, split: str, manifest: dict | None = None) -> DatasetSpec:
    url = storage.check_scheme(url)
    manifest = check_manifest(url, manifest) if manifest is not None else load_manifest(url)
    if manifest.get("layout", "shards") != "shards":
        raise UserError(f"{url}: a '{manifest['layout']}' layout build; the streaming loader needs --layout shards")
    splits = manifest["splits"]
    if split not in splits:
        raise UserError(f"{url}: no split {split!r} (has: {', '.join(splits)})")
    shards = tuple(ShardInfo(member_url(url, s["path"]), int(s["num_samples"]),
                             tuple(s["crc32"]) if "crc32" in s else None) for s in splits[split]["shards"])
    if not shards:
        raise UserError(f"{url}: split {split!r} has no shards")
    vocab = manifest.get("vocabulary")
    return DatasetSpec(shards, int(manifest["record_bytes"]), int(manifest["clip_samples"]),
                       manifest.get("codec", "pcm16"), int(manifest.get("sample_rate", 22050)),
                       tuple(vocab) if vocab else None, split, manifest)


def _expand(source) -> list[str]:
    if isinstance(source, (list, tuple)):
        return [str(s) for s in source]
    source = str(source)
    if "," in source and not source.startswith("pipe:"):
        return [u for part in source.split(",") for u in braceexpand(part.strip())]
    return list(braceexpand(source))


def resolve_source(source, split: str = "training", allow_pipe: bool = False) -> DatasetSpec:
    """Turn a manifest / folder / pattern / URL list into the DatasetSpec of one split."""
    urls = [storage.check_scheme(url) for url in _expand(source)]
    if len(urls) == 1:
        url = urls[0]
        if storage.scheme_of(url) == "local" and Path(url).is_file() and not url.endswith((".json", ".tar")):
            raise UserError(f"{url}: a file, but not a manifest.json or a .tar shard (pass a build folder, "
                            "its manifest.json or .tar shards)")
        if url.endswith(".json"):
            return spec_from_manifest(url, split)
        if not url.endswith(".tar"):
            manifest_url = storage.join_url(url, MANIFEST_NAME)
            if storage.exists(manifest_url):
                return spec_from_manifest(manifest_url, split)
            if storage.scheme_of(url) == "local" and Path(url).is_dir():
                urls = [str(p) for p in sorted(Path(url).glob(f"{split}/*.tar")) or sorted(Path(url).glob("*.tar"))]
                if not urls:
                    raise UserError(f"{url}: no manifest.json and no .tar shards in this folder")
            else:
                raise NotFoundError(url, "no manifest.json here and not a .tar shard URL")
    for url in urls:
        if storage.scheme_of(url) == "pipe" and not allow_pipe:
            raise UserError(f"{url}: {storage.PIPE_REFUSAL}")
    return spec_from_shards(urls, split, allow_pipe)


def spec_from_shards(urls: list[str], split: str | None, allow_pipe: bool = False) -> DatasetSpec:
    """No manifest: learn the record layout from the first shard, the counts from object sizes."""
    from fmashard.data.tarstream import probe_layout

    with storage.open_stream(urls[0], allow_pipe=allow_pipe) as stream:
        record_bytes, clip_samples, codec = probe_layout(stream, urls[0])
    shards = []
    for url in urls:
        size = storage.object_size(url)
        count, rest = divmod(size - TAR_END, record_bytes)
        if rest or count < 1:
            raise DataError(url, None, f"size {size} is not a whole number of {record_bytes}-byte records")
        shards.append(ShardInfo(url, count))
    return DatasetSpec(tuple(shards), record_bytes, clip_samples, codec, split=split)
