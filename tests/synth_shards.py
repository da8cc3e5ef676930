"""Small synthetic shards written with the real shard writer: many tiny shards, so that every test
sees shard boundaries, mid-shard starts and uneven shard sizes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmashard.format.tar import record_bytes
from shard_tools.tar_writer import ShardWriter

VOCAB = ["Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental"]


def write_synthetic_shards(root, counts, clip_samples=4000, split="training", seed=0, first_id=2):
    """Write shards of `counts[i]` samples under root/split and a manifest.json.
    Returns {track_id: (int16 audio, label)}."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sample_bytes = clip_samples * 2
    truth, shards, track_id = {}, [], first_id
    for i, count in enumerate(counts):
        name = f"{split}/{split}-{i:06d}"
        writer = ShardWriter(root / f"{name}.tar", root / f"{name}.idx", "pcm", sample_bytes)
        for _ in range(count):
            audio = rng.integers(-32768, 32767, clip_samples, dtype=np.int16)
            label = int(track_id % len(VOCAB))
            writer.add(f"{track_id:06d}", label, {"track_id": track_id, "label": label}, audio.astype("<i2").tobytes())
            truth[track_id] = (audio, label)
            track_id += 3
        result = writer.commit()
        shards.append({"path": f"{name}.tar", "index": f"{name}.idx", "num_samples": count,
                       "num_bytes": result.num_bytes, "sha256": result.sha256})
    manifest = {"format": "fmashard", "format_version": 1, "layout": "shards", "codec": "pcm16",
                "dtype": "int16", "sample_rate": 22050, "clip_samples": clip_samples, "sample_bytes": sample_bytes,
                "record_bytes": record_bytes(sample_bytes), "vocabulary": VOCAB,
                "splits": {split: {"num_samples": sum(counts), "shards": shards}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return truth
