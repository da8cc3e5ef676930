"""`gpu_check.py`'s plan (the sizes of a run, `TINY` for `--device cpu --tiny`) and its data: shards and the
notebook's .pt files of generated audio, written with the project's own tar writer (no soundfile, no soxr)."""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmashard.errors import UserError
from fmashard.format.codecs import CODECS
from fmashard.format.manifest import FORMAT_VERSION, dump_manifest
from fmashard.format.tar import key_of, record_bytes
from shard_tools.tar_writer import ShardWriter

VOCAB = ["Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International", "Pop", "Rock"]
SAMPLE_RATE, CLIP = 22_050, 661_500


@dataclass(frozen=True)
class Plan:
    tracks: int = 2000
    val_tracks: int = 16
    per_shard: int = 64
    rounds: int = 3
    min_seconds: float = 1.0
    batch: int = 8
    threads: tuple = (2, 4, 8)
    workers: tuple = (0, 2, 4)
    naive_workers: tuple = (0, 4, 8, 12)
    models: tuple = ("resnet1d", "soundnet", "soundnet-large")
    train_window_s: float = 5.0      # raised to a model's minimum where shorter
    train_windows: int = 7
    train_warmup: int = 3
    train_steps: int = 10            # timed steps per round and mode
    sync_model: str = "resnet1d"
    sync_warmup: int = 5
    sync_steps: int = 50
    device_batches: int = 20


TINY = Plan(tracks=8, val_tracks=2, per_shard=3, rounds=1, min_seconds=0.0, batch=2, threads=(2,), workers=(0, 2),
            naive_workers=(0, 2), train_window_s=0.05, train_windows=2, train_warmup=0, train_steps=1,
            sync_model="soundnet-large", sync_warmup=1, sync_steps=2, device_batches=2)


def write_data(work: Path, plan: Plan, log) -> dict:
    """Shards (training + validation) and the .pt files of the training tracks, of generated audio."""
    need = (plan.tracks + plan.val_tracks) * CLIP * 2 + plan.tracks * CLIP * 4
    if shutil.disk_usage(work).free < need * 1.1:
        raise UserError(f"--work {work}: {need / 1e9:.1f} GB needed, {shutil.disk_usage(work).free / 1e9:.1f} GB free")
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(CLIP + 97 * (plan.tracks + plan.val_tracks)) * 3000).astype("<i2")
    audio = lambda i: pool[97 * i: 97 * i + CLIP]   # noqa: E731 - track i: its own 30-s slice of the pool

    def write_shard(split, index, ids):
        name = f"{split}/{split}-{index:06d}"
        writer = ShardWriter(work / "shards" / f"{name}.tar", work / "shards" / f"{name}.idx", CODECS["pcm16"].ext,
                             CLIP * 2)
        for i in ids:
            writer.add(key_of(i), i % len(VOCAB), {"track_id": i, "label": i % len(VOCAB)}, audio(i).tobytes())
        r = writer.commit()
        return {"path": f"{name}.tar", "index": f"{name}.idx", "num_samples": len(ids), "num_bytes": r.num_bytes,
                "sha256": r.sha256}

    def write_pt(i):
        path = work / "files" / "training" / f"{key_of(i)}.pt"
        torch.save(torch.from_numpy(audio(i).astype(np.float32) / 32768), path)

    started, splits = time.perf_counter(), {}
    ids = {"training": range(plan.tracks), "validation": range(plan.tracks, plan.tracks + plan.val_tracks)}
    for folder in ("shards/training", "shards/validation", "files/training"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as threads:
        for split, span in ids.items():
            chunks = [list(span[k:k + plan.per_shard]) for k in range(0, len(span), plan.per_shard)]
            shards = list(threads.map(write_shard, [split] * len(chunks), range(len(chunks)), chunks))
            splits[split] = {"num_samples": len(span), "num_bytes": sum(s["num_bytes"] for s in shards),
                             "shards": shards}
        list(threads.map(write_pt, ids["training"]))
    common = {"format": "fmashard", "format_version": FORMAT_VERSION, "sample_rate": SAMPLE_RATE,
              "clip_samples": CLIP, "vocabulary": VOCAB}
    (work / "shards" / "manifest.json").write_text(dump_manifest({
        **common, "layout": "shards", "codec": "pcm16", "dtype": "int16", "sample_bytes": CLIP * 2,
        "record_bytes": record_bytes(CLIP * 2), "splits": splits}))
    files = [{"path": f"training/{key_of(i)}.pt", "track_id": i, "label": i % len(VOCAB), "num_samples": CLIP}
             for i in ids["training"]]
    (work / "files" / "manifest.json").write_text(dump_manifest({
        **common, "layout": "files", "codec": "float32", "dtype": "float32",
        "splits": {"training": {"num_samples": len(files), "files": files}}}))
    log(f"data: {plan.tracks} + {plan.val_tracks} tracks in {time.perf_counter() - started:.1f} s")
    return {"training_tracks": plan.tracks, "validation_tracks": plan.val_tracks, "clip_samples": CLIP,
            "shard_bytes": splits["training"]["num_bytes"], "pt_bytes": plan.tracks * CLIP * 4,
            "write_seconds": round(time.perf_counter() - started, 1)}
