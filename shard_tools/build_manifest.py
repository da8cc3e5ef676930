"""The writer's half of a build's `manifest.json`: `make_manifest` assembles it from the shard records (the
schema, its reader and its serialisation live in `fmashard.format.manifest`; `verify` reads it back with
`shard_tools.verify.read_build_manifest`)."""
from __future__ import annotations

from fmashard.format.manifest import FORMAT_VERSION, MANIFEST_FORMAT


def make_manifest(config, selection, records: list[dict]) -> dict:
    """`records` are the journal records of every planned shard (in plan order).  Holds no timing and
    no worker count, so the same arguments always give the same manifest.  A split's `num_samples`
    counts records (clips), `num_tracks` the tracks they come from."""
    shards_layout = config.layout == "shards"
    splits, vocabulary = list(selection.tracks), selection.vocabulary
    out_splits = {split: {"num_samples": 0, "num_tracks": 0, "num_bytes": 0,
                          "shards" if shards_layout else "files": []} for split in splits}
    skipped = []
    for record in records:
        split = out_splits[record["split"]]
        skipped += record["skipped"]
        if shards_layout and record["num_samples"]:
            entry = {k: record[k] for k in ("path", "index", "num_samples", "num_bytes", "sha256")}
            if "crc32" in record:   # of each sample's audio, in order: `check_crc` in the loader
                entry["crc32"] = record["crc32"]
            split["shards"].append(entry)
        elif not shards_layout:
            split["files"] += [{k: f[k] for k in ("path", "track_id", "label", "num_samples")}
                               for f in record["files"]]
        split["num_samples"] += record["num_samples"]
        split["num_tracks"] += record.get("num_tracks", record["num_samples"])
        split["num_bytes"] += record["num_bytes"]
    order = {split: i for i, split in enumerate(splits)}
    skipped.sort(key=lambda s: (order[s["split"]], s["track_id"]))
    return {
        "format": MANIFEST_FORMAT,
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
        "source": {"kind": "fma" if config.fma_dir else selection.subset, "split_by": selection.split_by,
                   "split_ratios": None if selection.split_by in ("fma", "table") else list(config.split_ratios)},
        "splits": out_splits,
        "totals": {
            "tracks_written": sum(s["num_tracks"] for s in out_splits.values()),
            "clips_written": sum(s["num_samples"] for s in out_splits.values()),
            "tracks_skipped": len(skipped),
            "bytes": sum(s["num_bytes"] for s in out_splits.values()),
            "excluded_no_genre": int(selection.excluded_no_genre),
        },
        "skipped": skipped,
    }
