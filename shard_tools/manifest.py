"""`manifest.json` (ARCHITECTURE.md schema, format_version 1), assembled from the shard records."""
from __future__ import annotations

import json

from fmashard import storage
from fmashard.errors import NotFoundError, UserError

FORMAT = "fmashard"
FORMAT_VERSION = 1


def make_manifest(config, vocabulary: list[str], splits: list[str], records: list[dict],
                  excluded_no_genre: int) -> dict:
    """`records` are the journal records of every planned shard (in plan order).  Holds no timing and
    no worker count, so the same arguments always give the same manifest."""
    shards_layout = config.layout == "shards"
    out_splits = {split: {"num_samples": 0, "num_bytes": 0, "shards" if shards_layout else "files": []}
                  for split in splits}
    skipped = []
    for record in records:
        split = out_splits[record["split"]]
        skipped += record["skipped"]
        if shards_layout and record["num_samples"]:
            split["shards"].append({k: record[k] for k in ("path", "index", "num_samples", "num_bytes", "sha256")})
        elif not shards_layout:
            split["files"] += [{k: f[k] for k in ("path", "track_id", "label", "num_samples")}
                               for f in record["files"]]
        split["num_samples"] += record["num_samples"]
        split["num_bytes"] += record["num_bytes"]
    order = {split: i for i, split in enumerate(splits)}
    skipped.sort(key=lambda s: (order[s["split"]], s["track_id"]))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layout": config.layout,
        "params": config.params(),
        "codec": config.stored_codec,
        "dtype": config.dtype,
        "sample_rate": config.sample_rate,
        "clip_samples": config.clip_samples,
        "sample_bytes": config.sample_bytes,
        "record_bytes": config.record_bytes if shards_layout else None,
        "vocabulary": list(vocabulary),
        "splits": out_splits,
        "totals": {
            "tracks_written": sum(s["num_samples"] for s in out_splits.values()),
            "tracks_skipped": len(skipped),
            "bytes": sum(s["num_bytes"] for s in out_splits.values()),
            "excluded_no_genre": int(excluded_no_genre),
        },
        "skipped": skipped,
    }


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=1) + "\n"


def read_manifest(out: str) -> tuple[str, dict]:
    """(manifest URL, manifest) for a build folder/prefix or a manifest.json URL; UserError if absent."""
    out = str(out)
    url = out if out.endswith(".json") else storage.join_url(out, "manifest.json")
    try:
        manifest = json.loads(storage.read_bytes(url))
    except NotFoundError:
        raise UserError(f"{url}: no manifest here (was `fmashard build` run into this folder?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{url}: not a JSON manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "splits" not in manifest:
        raise UserError(f"{url}: not an fmashard manifest (no format/splits fields)")
    return url, manifest
