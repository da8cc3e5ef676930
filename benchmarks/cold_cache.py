"""Why small host work costs more next to large reads (issue 27): each 1.3 MB record copied from the page
cache evicts the core's L1/L2, so the Python, numpy and torch code that runs right after it runs cold.

    .venv/bin/python benchmarks/cold_cache.py --shards DIR [--reps 300] [--json OUT]

Two measurements, one process, the shards' first training shard (page cache warm):
  header check   a batch of 8 records read by one preadv each into the rows of a batch buffer, the
                 header check (`tarstream.parse_preamble`) made right after each read, or after all
                 eight; and the check alone, hot (µs per record, median of --reps batches)
  op after read  one op timed hot (repeated) and right after a 1.3 MB copy: a torch view and slice, a
                 torch.from_numpy, a numpy slice, the storage use count (µs, median)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fmashard.data.sources import resolve_source  # noqa: E402
from fmashard.data.tarstream import parse_preamble  # noqa: E402
from fmashard.format.tar import PREAMBLE  # noqa: E402

BATCH = 8


def header_check(spec, reps: int) -> dict:
    shard = spec.shards[0]
    fd, rb, sb = os.open(shard.url, os.O_RDONLY), spec.record_bytes, spec.sample_bytes
    n = min(BATCH, shard.num_samples)
    rows = np.ones((n, -(-sb // 64) * 64), np.uint8)
    pres, pad = [bytearray(PREAMBLE) for _ in range(n)], bytearray(rb - PREAMBLE - sb)
    suffix = ("." + spec.audio_ext).encode()

    def read(i):
        os.preadv(fd, [pres[i], rows[i, :sb], pad] if len(pad) else [pres[i], rows[i, :sb]], i * rb)

    def check(i):
        assert parse_preamble(bytes(pres[i]), sb, suffix) is not None

    def each():
        for i in range(n):
            read(i)
            check(i)

    def after():
        for i in range(n):
            read(i)
        for i in range(n):
            check(i)

    def reads():
        for i in range(n):
            read(i)

    def hot():
        for i in range(n):
            check(i)
    out = {name: _median_us(fn, reps) / n for name, fn in
           (("reads only", reads), ("check after each read", each), ("check after all reads", after),
            ("check alone, hot", hot))}
    os.close(fd)
    return out


def ops_after_read(reps: int) -> dict:
    src = np.ones(1323008, np.uint8)
    dst = np.empty_like(src)
    t = torch.empty((8, 661504), dtype=torch.int16)
    small = np.zeros(8, np.int64)
    ops = {"torch view": lambda: t.view(t.shape), "torch slice": lambda: t[:8, :661500],
           "torch.from_numpy": lambda: torch.from_numpy(small), "numpy slice": lambda: src[:100],
           "storage use count": lambda: torch._C._storage_Use_Count(t.untyped_storage()._cdata)}
    out = {}
    for name, op in ops.items():
        def cold(op=op):
            dst[:] = src
            return _time_ns(op)
        out[name] = {"hot_us": _median_us(op, reps), "after_1.3MB_copy_us": statistics.median(
            cold() for _ in range(reps)) / 1e3}
    return out


def _time_ns(fn) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def _median_us(fn, reps: int) -> float:
    fn()
    return statistics.median(_time_ns(fn) for _ in range(reps)) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", required=True)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--json")
    args = ap.parse_args()
    spec = resolve_source(args.shards, "training")
    result = {"header_check_us_per_record": header_check(spec, args.reps), "op_us": ops_after_read(args.reps),
              "machine": _machine(), "command": " ".join(sys.argv)}
    for name, us in result["header_check_us_per_record"].items():
        print(f"{name:<24} {us:7.1f} us a record")
    for name, r in result["op_us"].items():
        print(f"{name:<24} hot {r['hot_us']:6.1f} us   after a 1.3 MB copy {r['after_1.3MB_copy_us']:6.1f} us")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
