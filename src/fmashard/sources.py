"""Source stage: whatever the user points at -> a `DatasetSpec` (the shards of one split and their layout).

Accepted: a manifest (`.../manifest.json`, any scheme), a folder or prefix holding `manifest.json`, a
folder of `.tar` files, a brace-expanded pattern (`shards/train-{000000..000009}.tar`), or a list of
shard URLs.  Without a manifest the record layout is read from the first shard's headers and the
sample counts from the object sizes (our records have a fixed size).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from braceexpand import braceexpand

from fmashard import storage
from fmashard.errors import DataError, NotFoundError, UserError

MANIFEST_NAME = "manifest.json"
AUDIO_DTYPES = {"pcm16": ("pcm", "int16", 2), "f16": ("f16", "float16", 2)}
TAR_END = 1024


@dataclass(frozen=True)
class ShardInfo:
    url: str
    num_samples: int


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
    try:
        raw = storage.read_bytes(url)
    except NotFoundError:
        raise NotFoundError(url, "no manifest.json here (build shards with `fmashard build`)") from None
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{url}: not a JSON manifest ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if manifest.get("format") != "fmashard" or "splits" not in manifest:
        raise UserError(f"{url}: not an fmashard manifest (no format/splits fields)")
    return manifest


def spec_from_manifest(url: str, split: str, manifest: dict | None = None) -> DatasetSpec:
    manifest = manifest or load_manifest(url)
    if manifest.get("layout", "shards") != "shards":
        raise UserError(f"{url}: a '{manifest['layout']}' layout build; the streaming loader needs --layout shards")
    splits = manifest["splits"]
    if split not in splits:
        raise UserError(f"{url}: no split {split!r} (has: {', '.join(splits)})")
    base = storage.parent_url(url)
    shards = tuple(ShardInfo(storage.join_url(base, s["path"]), int(s["num_samples"]))
                   for s in splits[split]["shards"])
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
    urls = _expand(source)
    if len(urls) == 1:
        url = urls[0]
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
            raise UserError(f"{url}: pipe: URLs run a shell command; pass --allow-pipe to permit them")
    return spec_from_shards(urls, split, allow_pipe)


def spec_from_shards(urls: list[str], split: str | None, allow_pipe: bool = False) -> DatasetSpec:
    """No manifest: learn the record layout from the first shard, the counts from object sizes."""
    from fmashard.tarstream import probe_layout

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
