"""Peak RSS of the loader across epochs: bounded by the shuffle buffer, flat from epoch to epoch.

    .venv/bin/python benchmarks/loader_memory.py [--shards /tmp/fmashard-bench/shards] [--epochs 6]

In a fresh process (so nothing else has touched its memory): the full path (ShardLoader -> DeviceFeeder
-> float windows on the CPU), default configuration, one epoch after another.  After every epoch: the
process RSS, the peak RSS so far (sampled every 10 ms), and the distinct batch and window buffers the
loader has ever allocated.  The bound to compare with: the shuffle buffer (shuffle_buffer tracks of
int16 audio) plus what is in flight (read threads' jobs, the batch being windowed and the one staged
by the device stage).  Writes benchmarks/results/loader_memory.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="/tmp/fmashard-bench/shards")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "loader_memory.json"))
    args = parser.parse_args()

    import torch

    from fmashard.bench.report import environment
    from fmashard.data import recycle
    from fmashard.data.device import DeviceFeeder
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source
    from fmashard.data.windows import WindowSpec

    proc, peak, stop = psutil.Process(), [0], threading.Event()

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)
    threading.Thread(target=sample, daemon=True).start()

    spec = resolve_source(args.shards, "training")
    config = LoaderConfig()
    loader = ShardLoader(spec, config)
    base = proc.memory_info().rss
    epochs = []
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        started, tracks = time.perf_counter(), 0
        for batch in DeviceFeeder(loader, torch.device("cpu"), WindowSpec(), epoch=epoch):
            tracks += batch.num_tracks
        buffers = {f"{tuple(k[0])} {k[1]}": len(v) for k, v in recycle._cache.items()}
        epochs.append({"epoch": epoch, "tracks": tracks, "seconds": round(time.perf_counter() - started, 2),
                       "rss_mb": round(proc.memory_info().rss / 2**20, 1), "peak_rss_mb": round(peak[0] / 2**20, 1),
                       "buffers": buffers})
        print(epochs[-1], flush=True)
    stop.set()
    shuffle_mb = config.shuffle_buffer * spec.sample_bytes / 2**20
    report = {"command": "python benchmarks/loader_memory.py " + " ".join(sys.argv[1:]), "environment": environment(),
              "config": {"batch_size": config.batch_size, "shuffle_buffer": config.shuffle_buffer,
                         "read_threads": config.read_threads, "tracks": spec.num_samples},
              "rss_before_mb": round(base / 2**20, 1), "shuffle_buffer_mb": round(shuffle_mb, 1),
              "batch_mb": round(config.batch_size * spec.sample_bytes / 2**20, 1),
              "windows_mb": round(config.batch_size * 7 * 110_250 * 4 / 2**20, 1), "epochs": epochs}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
