"""A build's `manifest.json`, assembled from the shard records (the schema, its reader and its
serialisation live in `fmashard.format.manifest`), and read back for `verify`."""
from __future__ import annotations

from fmashard import storage
from fmashard.errors import NotFoundError, UserError
from fmashard.format.manifest import FORMAT_VERSION, MANIFEST_FORMAT, load_manifest, manifest_url
from shard_tools.build_output import BUILD_FILE


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


class ManifestProblem(UserError):
    """The folder is (or was meant to be) a build, but its manifest is missing, unreadable or of an unknown
    format: `verify` reports it as a problem with the build (exit 1), not as a usage error."""


def read_build_manifest(out: str) -> tuple[str, dict]:
    """(manifest URL, manifest) for a build folder/prefix or a manifest.json URL.  UserError for a path
    that is not there or not a folder; ManifestProblem for a build folder without a usable manifest.
    The paths it lists are not checked here: `verify` reports each one outside the folder."""
    out = storage.check_scheme(str(out))
    url = manifest_url(out)
    path = storage.local_path(out)
    if path is not None:
        if path.is_file() and not out.endswith(".json"):
            raise UserError(f"{out}: a file, not a build folder (pass the folder `fmashard build --out` wrote, "
                            "or its manifest.json)")
        if not (path if not out.endswith(".json") else path.parent).is_dir():
            raise UserError(f"{out}: no such build folder or manifest")
    try:
        return url, load_manifest(url, invalid=ManifestProblem, check_paths=False)
    except NotFoundError:
        raise _no_manifest(out, url) from None


def _no_manifest(out: str, url: str) -> UserError:
    if storage.exists(storage.join_url(storage.parent_url(url), BUILD_FILE)):
        return ManifestProblem(f"{out}: incomplete build: no manifest.json yet (the build was interrupted or "
                               "failed); re-run the same `fmashard build` command to finish it")
    if storage.is_remote(url):  # no listing: a prefix with nothing of ours may not exist at all
        return UserError(f"{url}: no manifest here (was `fmashard build` run into this prefix?)")
    return ManifestProblem(f"{url}: no manifest here (was `fmashard build` run into this folder?)")
