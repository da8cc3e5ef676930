"""Peak RSS of the loader across epochs: bounded by the shuffle buffer, flat from epoch to epoch.

    .venv/bin/python benchmarks/loader_memory.py [--shards /tmp/fmashard-bench/shards] [--epochs 6] [--workers 2]

In a fresh process (so nothing else has touched its memory): the full path (ShardLoader -> DeviceFeeder
-> float windows on the CPU), default configuration, one epoch after another.  After every epoch: the
process RSS, the peak RSS so far (sampled every 10 ms), and the distinct batch and window buffers the
loader has ever allocated.  The bound to compare with: the shuffle buffer (shuffle_buffer tracks of
int16 audio) plus what is in flight (read threads' jobs, the batch being windowed and the one staged
by the device stage).  With --workers N: the RSS of the main process and of its DataLoader workers
(pages of the shared batch rings count in both), and the ring buffers made and the fresh buffers
workers had to allocate (fmashard.data.shm).  Writes benchmarks/results/loader_memory[_wN].json.
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
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    suffix = f"_w{args.workers}" if args.workers else ""
    args.json = args.json or str(ROOT / "benchmarks" / "results" / f"loader_memory{suffix}.json")

    import torch

    from fmashard.bench.report import environment
    from fmashard.data import recycle
    from fmashard.data.device import DeviceFeeder
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source
    from fmashard.data.windows import WindowSpec

    proc, peak, stop = psutil.Process(), [0, 0], threading.Event()

    def children_rss():
        total = 0
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)
            if args.workers:
                peak[1] = max(peak[1], children_rss())
    threading.Thread(target=sample, daemon=True).start()

    spec = resolve_source(args.shards, "training")
    config = LoaderConfig(num_workers=args.workers)
    loader = ShardLoader(spec, config)
    base = proc.memory_info().rss
    epochs = []
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        started, tracks = time.perf_counter(), 0
        for batch in DeviceFeeder(loader, torch.device("cpu"), WindowSpec(), epoch=epoch):
            tracks += batch.num_tracks
        buffers = {f"{tuple(k[0])} {k[1]}": len(v) for k, v in recycle._cache.items()}
        if loader.rings:
            buffers["worker rings"] = sum(r.allocated for r in loader.rings)
            buffers["worker fresh"] = sum(r.fresh for r in loader.rings)
        epochs.append({"epoch": epoch, "tracks": tracks, "seconds": round(time.perf_counter() - started, 2),
                       "rss_mb": round(proc.memory_info().rss / 2**20, 1), "peak_rss_mb": round(peak[0] / 2**20, 1),
                       "buffers": buffers})
        if args.workers:
            epochs[-1].update(workers_rss_mb=round(children_rss() / 2**20, 1),
                              workers_peak_rss_mb=round(peak[1] / 2**20, 1))
        print(epochs[-1], flush=True)
    stop.set()
    shuffle_mb = config.shuffle_buffer * spec.sample_bytes / 2**20
    report = {"command": "python benchmarks/loader_memory.py " + " ".join(sys.argv[1:]), "environment": environment(),
              "config": {"batch_size": config.batch_size, "shuffle_buffer": config.shuffle_buffer,
                         "read_threads": config.read_threads, "num_workers": config.num_workers,
                         "tracks": spec.num_samples},
              "rss_before_mb": round(base / 2**20, 1), "shuffle_buffer_mb": round(shuffle_mb, 1),
              "batch_mb": round(config.batch_size * spec.sample_bytes / 2**20, 1),
              "windows_mb": round(config.batch_size * 7 * 110_250 * 4 / 2**20, 1), "epochs": epochs}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
