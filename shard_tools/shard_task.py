"""The build's unit of work: one shard.  `build_shard(task) -> record` decodes the shard's tracks, writes its
tar and .idx (or its .pt files) under temporary names, commits them (s3: uploads them, .idx first) and
returns the shard's journal record.

A task is a pure function of (BuildConfig.identity(), plan): re-running it, on any machine and in any
process, writes the same bytes under the same names, so a retried or duplicated task is harmless.
`ShardTask` is picklable (a frozen config and a plan of `TrackRef`s): a local process pool and a Ray
worker run the same function (shard_tools.engines).  Decoded audio never leaves the process that
decodes it, except in the local engine's track mode, which feeds `results` from a pool of track decoders.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fmashard import storage
from fmashard.errors import UserError
from fmashard.format.tar import key_of
from shard_tools.audio import TrackResult, TrackTask, process_track
from shard_tools.build_config import BuildConfig
from shard_tools.build_output import BuildOutput
from shard_tools.build_plan import ShardPlan, clip_order
from shard_tools.tar_writer import ShardWriter


@dataclass(frozen=True)
class ShardTask:
    config: BuildConfig
    plan: ShardPlan

    @property
    def name(self) -> str:
        return self.plan.name

    def track_tasks(self) -> list[TrackTask]:
        return [track_task(self.config, track) for track in self.plan.tracks]


def track_task(config: BuildConfig, track) -> TrackTask:
    return TrackTask(track.track_id, track.genre, track.label, track.path, config.clip_settings)


def build_shard(task: ShardTask, results=None, out: BuildOutput | None = None, advance=None) -> dict:
    """Build one shard; return its journal record.  `results`: an iterator of this shard's `TrackResult`s
    in plan order (default: decode them here); `out`: the driver's output (default: open OUT here, with
    its own staging folder for s3); `advance()`: called once per track."""
    own = out is None
    try:
        if own:
            out = BuildOutput(task.config.out)
        results = map(process_track, task.track_tasks()) if results is None else results
        out.local(task.plan.split).mkdir(parents=True, exist_ok=True)
        write = write_shard if task.config.layout == "shards" else write_files
        return write(out, task.config, task.plan, results, advance or (lambda: None))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"{task.config.out}: shard {task.name}: cannot write it ({exc.strerror or exc}{where})") \
            from None
    except UserError as exc:   # the storage layer's (a bucket gone, a denial): name the shard if it does not
        if task.name in str(exc):
            raise
        raise UserError(f"{task.config.out}: shard {task.name}: {exc}") from None
    finally:
        if own and out is not None:
            out.close()


# ---------------------------------------------------------------------------- records
def shown_path(config: BuildConfig, track) -> str:
    """A track's path as the skip list names it: as the table gave it, or relative to the input folder."""
    if track.shown:
        return track.shown
    return Path(track.path).relative_to(config.fma_dir).as_posix()


def skip_entry(config: BuildConfig, plan: ShardPlan, result: TrackResult, track) -> dict:
    rel = shown_path(config, track)
    return {"track_id": result.track_id, "split": plan.split, "path": rel,
            "reason": result.reason.replace(track.path, rel)}


def _results_of(plan: ShardPlan, results, advance):
    for track in plan.tracks:
        result = next(results)
        advance()
        if result.track_id != track.track_id:  # the ordered imap guarantees this; a bug otherwise
            raise RuntimeError(f"{plan.name}: expected track {track.track_id}, got {result.track_id}")
        yield track, result


def _shard_records(config: BuildConfig, plan: ShardPlan, results, advance, skipped: list):
    """(key, label, clip) of every record of the shard, in write order; skipped tracks go to `skipped`.
    One clip per track: in plan order, as the tracks arrive.  Several: the shard's clips are gathered
    (at most one shard of audio in memory) and written in `clip_order`."""
    gathered = []
    for track, result in _results_of(plan, results, advance):
        if result.skipped:
            skipped.append(skip_entry(config, plan, result, track))
        elif config.long_tracks == "first":
            yield key_of(track.track_id), track.label, result.clips[0]
        else:
            gathered += [(key_of(track.track_id, n), track.label, clip) for n, clip in enumerate(result.clips)]
    if gathered:
        for i in clip_order(len(gathered), config.seed, plan):
            yield gathered[i]


def write_shard(out: BuildOutput, config: BuildConfig, plan: ShardPlan, results, advance) -> dict:
    writer, skipped = None, []
    try:
        for key, label, clip in _shard_records(config, plan, results, advance, skipped):
            if writer is None:  # a shard whose tracks are all skipped is never written
                writer = ShardWriter(out.local(plan.tar_path), out.local(plan.index_path), config.audio_ext,
                                     config.sample_bytes)
            writer.add(key, label, clip.meta, clip.payload, clip.crc32)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    record = {"split": plan.split, "path": None, "num_samples": 0, "num_bytes": 0, "skipped": skipped,
              "num_tracks": len(plan.tracks) - len(skipped)}
    if writer is not None:
        shard = writer.commit()
        index_bytes = out.local(plan.index_path).read_bytes()
        record.update(path=plan.tar_path, index=plan.index_path, num_samples=shard.num_samples,
                      num_bytes=shard.num_bytes, sha256=shard.sha256, index_bytes=len(index_bytes),
                      index_sha256=hashlib.sha256(index_bytes).hexdigest(), keys=shard.keys, crc32=shard.crc32)
        out.publish([plan.index_path, plan.tar_path])  # .idx first: a present .tar implies its .idx
    return record


def write_files(out: BuildOutput, config: BuildConfig, plan: ShardPlan, results, advance) -> dict:
    """--layout files: the original notebook's one float32 tensor per track (`{split}/{track_id:06d}.pt`)."""
    import numpy as np
    import torch

    files, skipped = [], []
    for track, result in _results_of(plan, results, advance):
        if result.skipped:
            skipped.append(skip_entry(config, plan, result, track))
            continue
        rel = f"{plan.split}/{key_of(track.track_id)}.pt"
        with storage.atomic_path(out.local(rel)) as tmp:   # torch.save names the archive after the path
            torch.save(torch.from_numpy(np.frombuffer(result.payload, dtype="<f4").copy()), tmp)
            data = tmp.read_bytes()
        out.publish([rel])
        files.append({"path": rel, "track_id": track.track_id, "label": track.label,
                      "num_samples": result.meta["num_samples"], "num_bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    return {"split": plan.split, "files": files, "num_samples": len(files), "num_tracks": len(files),
            "num_bytes": sum(f["num_bytes"] for f in files), "skipped": skipped}
