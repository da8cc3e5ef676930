"""Source stage: whatever the user points at -> a `DatasetSpec` (the shards of one split and their layout).

Accepted: a manifest (`.../manifest.json`, any scheme), a folder or prefix holding `manifest.json`, a
folder of `.tar` files, a brace-expanded pattern (`shards/train-{000000..000009}.tar`), or a list of
shard URLs.  Without a manifest the record layout is read from the first shard's headers and the
sample counts from the object sizes (our records have a fixed size).
"""
from __future__ import annotations

from pathlib import Path

from braceexpand import braceexpand

from fmashard import storage
from fmashard.errors import DataError, EmptySplitError, NotFoundError, UserError
from fmashard.format.codecs import SHARD_CODECS
from fmashard.format.manifest import MANIFEST_NAME, check_manifest, load_manifest, member_url
from fmashard.format.spec import DatasetSpec, ShardInfo
from fmashard.format.tar import records_in


def spec_from_manifest(url: str, split: str, manifest: dict | None = None) -> DatasetSpec:
    url = storage.check_scheme(url)
    manifest = check_manifest(url, manifest) if manifest is not None else load_manifest(url)
    if manifest.get("layout", "shards") != "shards":
        raise UserError(f"{url}: a '{manifest['layout']}' layout build; the streaming loader needs --layout shards")
    codec = manifest.get("codec", "pcm16")
    if codec not in SHARD_CODECS:
        raise UserError(f"{url}: codec {codec!r} is not one this fmashard reads ({', '.join(SHARD_CODECS)})")
    splits = manifest["splits"]
    if split not in splits:
        raise UserError(f"{url}: no split {split!r} (has: {', '.join(splits)})")
    shards = tuple(ShardInfo(member_url(url, s["path"]), int(s["num_samples"]),
                             tuple(s["crc32"]) if "crc32" in s else None) for s in splits[split]["shards"])
    if not shards:
        raise EmptySplitError(f"{url}: split {split!r} has no tracks ({why_empty(manifest, split)})")
    vocab = manifest.get("vocabulary")
    return DatasetSpec(shards, int(manifest["record_bytes"]), int(manifest["clip_samples"]),
                       codec, int(manifest.get("sample_rate", 22050)),
                       tuple(vocab) if vocab else None, split, manifest)


def why_empty(manifest: dict, split: str) -> str:
    """Why a build's split holds no track, and what changes it (shard_tools.splits says the same at build time)."""
    skipped = sum(1 for s in manifest.get("skipped", []) if s.get("split") == split)
    if skipped:
        return f"all {skipped} of its tracks were skipped: the manifest's `skipped` says why"
    split_by = (manifest.get("source") or {}).get("split_by")
    if split_by == "table":
        return "the table's split column gives it none"
    if split_by == "fma":
        return "FMA's tracks.csv gives it none in this subset"
    return ("the build gave it none: rebuild with a --split-ratios share for it and at least as many groups, or "
            "tracks, as splits with a share")


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
        if storage.backend_for(url).runs_command and not allow_pipe:
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
        count, rest = records_in(size, record_bytes)
        if rest or count < 1:
            raise DataError(url, None, f"size {size} is not a whole number of {record_bytes}-byte records")
        shards.append(ShardInfo(url, count))
    return DatasetSpec(tuple(shards), record_bytes, clip_samples, codec, split=split)
