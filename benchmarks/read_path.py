"""Where the host path's time goes (issue 27): fmashard's loader and the bench's `raw` against plain read loops.

    .venv/bin/python benchmarks/read_path.py --shards DIR [--rounds 5] [--tree NAME=SRC[@COMMIT] ...] [--json OUT]

Every case reads the same shard files (page cache warm: a plain pass runs first).  A round runs every
case once, in a fresh process per tree (`--tree before=/tmp/old/src@8287f31`: another checkout's `src`;
default: this checkout), trees alternating round by round, so before and after are measured side by
side.  In each case a pass is repeated until --min-seconds have passed; per pass: tracks/s, process CPU
ms/track (user + system, all threads), minor page faults and context switches per track.  Ratios are
paired: the case's rate over `plain-1M`'s in the same process and round, median over rounds.

Cases (the causes the issue asks about, one at a time):
  plain-<size>     readinto loop over each tar into one reused buffer of <size> (the read size)
  plain-8M-fresh   the same with a new 8 MiB buffer per pass (what the bench's raw did)
  preadv-warm      one preadv per 4 records (headers aside, audio into batch rows) into one reused batch buffer
  preadv-cold      the same into 16 batch buffers in turn (160 MB: the destination is no longer in cache)
  preadv-fresh     the same into a new anonymous mapping per batch (every page faulted and zeroed)
  preadv-warm-2t   preadv-warm on 2 threads, 2 buffers
  bench-raw        the tree's `fmashard bench` raw pass (fmashard.bench.loaders: RawPass, before it raw_read)
  host-rt1/rt2     the tree's ShardLoader (fmashard-host), read_threads 1 and 2
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"64K": 64 << 10, "256K": 256 << 10, "1M": 1 << 20, "2M": 2 << 20, "8M": 8 << 20}
CHUNK = 4   # consecutive records of one shard per preadv


def usage() -> tuple[float, int, int]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime, u.ru_minflt, u.ru_nvcsw + u.ru_nivcsw


_REUSED: dict[int, bytearray] = {}


def plain(files, size: int, fresh: bool = False) -> None:
    buf = bytearray(size) if fresh else _REUSED.setdefault(size, bytearray(size))
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


class Preadv:
    """The loader's local read without the loader: CHUNK records per preadv into (8, row) batch buffers."""

    def __init__(self, spec, preamble: int):
        import numpy as np

        self.spec, self.np = spec, np
        self.row = -(-spec.sample_bytes // 64) * 64
        self.pre = [bytearray(preamble) for _ in range(CHUNK)]
        self.pad = bytearray(spec.record_bytes - preamble - spec.sample_bytes)
        self.pool = [self._mapping() for _ in range(16)]
        self.fds = [os.open(shard.url, os.O_RDONLY) for shard in spec.shards]   # open for the process

    def _mapping(self):
        m = mmap.mmap(-1, 8 * self.row)
        rows = self.np.frombuffer(m, self.np.uint8).reshape(8, self.row)
        rows[:] = 1          # touched once: no page faults later
        return rows

    def jobs(self):
        for fd, shard in zip(self.fds, self.spec.shards):
            for first in range(0, shard.num_samples, CHUNK):
                yield fd, first, min(CHUNK, shard.num_samples - first)

    def run(self, buffers: int, threads: int = 1, fresh: bool = False) -> None:
        sb, rb, k, work = self.spec.sample_bytes, self.spec.record_bytes, 0, []
        rows = None
        for fd, first, n in self.jobs():
            iov = []
            for i in range(n):
                if k % 8 == 0:
                    rows = self._mapping() if fresh else self.pool[(k // 8) % buffers]
                iov += [self.pre[i], rows[k % 8, :sb], self.pad] if len(self.pad) else [self.pre[i], rows[k % 8, :sb]]
                k += 1
            if threads > 1:
                work.append((fd, iov, first * rb))
            else:
                os.preadv(fd, iov, first * rb)
        if work:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda job: os.preadv(*job), work))


def cases(spec):
    """{name: pass function} over this tree's fmashard."""
    from fmashard.bench import loaders as bench_loaders
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.format.tar import PREAMBLE

    files = [s.url for s in spec.shards]
    pv = Preadv(spec, PREAMBLE)
    loaders = {rt: ShardLoader(spec, LoaderConfig(batch_size=8, read_threads=rt)) for rt in (1, 2)}

    def host(rt):
        for _ in loaders[rt]:
            pass
    out = {f"plain-{name}": (lambda size=size: plain(files, size)) for name, size in SIZES.items()}
    out.update({
        "plain-8M-fresh": lambda: plain(files, 8 << 20, fresh=True),
        "preadv-warm": lambda: pv.run(1), "preadv-cold": lambda: pv.run(16),
        "preadv-fresh": lambda: pv.run(0, fresh=True),
        "preadv-warm-2t": lambda: pv.run(2, threads=2),
        "bench-raw": (bench_loaders.RawPass(spec, spec.num_samples) if hasattr(bench_loaders, "RawPass")
                      else lambda: bench_loaders.raw_read(spec, spec.num_samples)),
        "host-rt1": lambda: host(1), "host-rt2": lambda: host(2),
    })
    return out


def measure(fn, tracks: int, min_seconds: float) -> dict:
    passes, (cpu0, flt0, csw0), start = 0, usage(), time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or not passes:
        fn()
        passes += 1
    cpu1, flt1, csw1 = usage()
    n = passes * tracks
    return {"tracks_per_s": n / elapsed, "cpu_ms_per_track": (cpu1 - cpu0) / n * 1e3,
            "minflt_per_track": (flt1 - flt0) / n, "csw_per_track": (csw1 - csw0) / n, "passes": passes}


def worker(src: str, shards: str, min_seconds: float) -> None:
    """One round in this process: every case once, in order; one JSON line on stdout."""
    sys.path.insert(0, src)
    from fmashard.data.sources import resolve_source

    spec = resolve_source(shards, "training")
    todo = cases(spec)
    plain([s.url for s in spec.shards], 1 << 20)                         # page cache warm, buffers made
    for fn in todo.values():
        fn()                                                             # warm-up pass of each
    row = {name: measure(fn, spec.num_samples, min_seconds) for name, fn in todo.items()}
    print(json.dumps({"tracks": spec.num_samples, "cases": row}))


def machine() -> dict:
    info = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Flags", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def summarize(rounds: dict[str, list[dict]]) -> dict:
    table = {}
    for tree, runs in rounds.items():
        for name in runs[0]["cases"]:
            rows = [r["cases"][name] for r in runs]
            paired = [r["cases"][name]["tracks_per_s"] / r["cases"]["plain-1M"]["tracks_per_s"] for r in runs]
            rate = [x["tracks_per_s"] for x in rows]
            table.setdefault(name, {})[tree] = {
                "tracks_per_s": {"median": statistics.median(rate), "min": min(rate), "max": max(rate)},
                "of_plain_1M_paired": statistics.median(paired),
                **{k: statistics.median(x[k] for x in rows) for k in ("cpu_ms_per_track", "minflt_per_track",
                                                                       "csw_per_track")}}
    return table


def print_table(table: dict) -> None:
    trees = list(next(iter(table.values())))
    print(f"{'case':16s}" + "".join(f" | {t + ': tracks/s (min-max), of plain-1M, CPU ms, faults, csw':64s}"
                                    for t in trees))
    for name, per_tree in table.items():
        cells = []
        for tree in trees:
            r = per_tree[tree]
            t = r["tracks_per_s"]
            cells.append(f"{t['median']:5.0f} ({t['min']:.0f}-{t['max']:.0f}) {r['of_plain_1M_paired']:4.0%} "
                         f"{r['cpu_ms_per_track']:.3f} {r['minflt_per_track']:6.2f} {r['csw_per_track']:5.2f}")
        print(f"{name:16s}" + "".join(f" | {c:64s}" for c in cells))


def git_commit(path: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None


def parse_tree(text: str) -> tuple[str, str, str | None]:
    name, _, rest = text.partition("=")
    src, _, commit = rest.partition("@")
    return name, src, commit or git_commit(Path(src))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--tree", action="append", help="NAME=SRC[@COMMIT], repeatable (default: this checkout)")
    ap.add_argument("--json", help="write the rounds and the summary here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.shards, args.min_seconds)
    trees = [parse_tree(t) for t in args.tree or [f"this={ROOT / 'src'}"]]
    rounds: dict[str, list[dict]] = {name: [] for name, _, _ in trees}
    for index in range(args.rounds):
        for name, src, _ in trees:
            out = subprocess.run([sys.executable, __file__, "--worker", src, "--shards", args.shards,
                                  "--min-seconds", str(args.min_seconds)], capture_output=True, text=True, check=True)
            rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {index + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    table = summarize(rounds)
    print_table(table)
    record = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": git_commit(ROOT),
              "trees": {name: {"src": src, "commit": commit} for name, src, commit in trees},
              "machine": machine(), "load_at_end": os.getloadavg(), "summary": table, "rounds": rounds}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
