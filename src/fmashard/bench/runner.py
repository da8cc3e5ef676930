"""`fmashard bench`: every loader over the same tracks, side by side in one process run.

Rounds are interleaved (A B C A B C ...) after one warm-up round, so drift in the machine's state
(page cache, CPU frequency, other load) hits every loader alike; in each round a loader repeats its
pass until it has run `min_seconds`.  Ratios are given as the ratio of medians and, paired, as the
median of the per-round ratios.  Loaders:

  raw        the physical limit: sequential `readinto` of the same shard files (for URLs: GETs of the
             same objects with the same client), no parsing at all
  wds-host   fmashard's host path: shard bytes -> collated (B, N) int16 batch buffer
  wds-host-crc  the same with `check_crc`: each sample's audio checked against the build's crc32
  wds        fmashard's full path: the same + decode and windowing on the device -> (B*W, 1, L) float
  dali       DALI's webdataset reader, cast/scale/windows in the pipeline (extra `dali`)
  naive      the notebook: torch.load one float32 .pt per track, windows cut in Python, default collate
  naive-mp3  the notebook's other mode: decode + resample each MP3 on every epoch
"""
from __future__ import annotations

import resource
import statistics
import threading
import time
from dataclasses import dataclass, field

import psutil
import torch

from fmashard.errors import UserError
from fmashard.data.windows import WindowSpec

LOADERS = ("raw", "wds-host", "wds-host-crc", "wds", "dali", "naive", "naive-mp3")


@dataclass(frozen=True)
class BenchConfig:
    shards: str
    naive: str | None = None
    fma_dir: str | None = None
    loaders: tuple[str, ...] = ("naive-mp3", "naive", "wds-host", "wds", "raw")
    workers: tuple[int, ...] = (0,)
    batch_size: int = 8
    rounds: int = 5
    device: str = "auto"
    split: str = "training"
    max_tracks: int | None = None
    with_model: str | None = None
    amp: bool = False
    model_steps: int = 4
    seed: int = 0
    min_seconds: float = 1.0   # a measurement repeats its pass until it has run this long

    def __post_init__(self):
        unknown = [name for name in self.loaders if name not in LOADERS]
        if unknown:
            raise UserError(f"--loaders: unknown {', '.join(unknown)} (choose from {', '.join(LOADERS)})")
        if "naive" in self.loaders and not self.naive:
            raise UserError("--loaders naive needs --naive SRC_FILES (a `fmashard build --layout files` output)")
        if self.rounds < 1 or self.batch_size < 1:
            raise UserError("--rounds and --batch-size must be >= 1")
        if any(w < 0 for w in self.workers):
            raise UserError("--workers: worker counts must be >= 0")


@dataclass
class Run:
    """One timed pass of one loader."""

    tracks: int
    bytes: int
    seconds: float
    first_batch: float
    cpu_seconds: float
    peak_rss: int
    rss_added: int
    passes: int = 1   # passes averaged into this measurement (seconds and CPU are per pass)


def measure(runner, min_seconds: float) -> Run:
    """Repeat one loader's pass until `min_seconds` have passed; per-pass averages.  A pass over 400
    tracks takes ~0.1 s for the fast loaders, too short to time reliably on a shared machine."""
    runs = [runner()]
    while sum(r.seconds for r in runs) < min_seconds:
        runs.append(runner())
    n = len(runs)
    return Run(runs[0].tracks, runs[0].bytes, sum(r.seconds for r in runs) / n, runs[0].first_batch,
               sum(r.cpu_seconds for r in runs) / n, max(r.peak_rss for r in runs),
               max(r.rss_added for r in runs), n)


@dataclass
class LoaderResult:
    name: str
    workers: int
    runs: list[Run] = field(default_factory=list)


class RssSampler:
    """Peak RSS of this process and its children (DataLoader workers), sampled every 10 ms;
    `added` is the peak above the RSS at the start (what the loader itself holds)."""

    def __init__(self):
        self.proc, self.peak, self.start, self._stop = psutil.Process(), 0, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.children, self.samples = [], 0

    def _sample(self):
        # Listing children scans /proc (~2 ms of Python holding the GIL): every 10th sample only, so
        # the sampler does not slow the multi-threaded loaders it measures.
        if self.samples % 10 == 0:
            self.children = self.proc.children(recursive=True)
        self.samples += 1
        total = self.proc.memory_info().rss
        for child in self.children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self):
        while not self._stop.wait(0.01):
            self._sample()

    @property
    def added(self) -> int:
        return max(0, self.peak - self.start)

    def __enter__(self):
        self._sample()
        self.start = self.peak
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def timed(batches, count_tracks, bytes_per_track: int, limit: int | None) -> Run:
    """Drain an iterator of batches (stopping at `limit` tracks) and time it."""
    cpu0, start, first, tracks = cpu_seconds(), time.perf_counter(), None, 0
    with RssSampler() as rss:
        it = iter(batches)
        for batch in it:
            if first is None:
                first = time.perf_counter() - start
            tracks += count_tracks(batch)
            if limit and tracks >= limit:
                tracks = limit
                break
        del it  # shuts down DataLoader workers, so their CPU time is counted
        seconds = time.perf_counter() - start
    return Run(tracks, tracks * bytes_per_track, seconds, first or seconds, cpu_seconds() - cpu0, rss.peak,
               rss.added)


def median_min_max(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(result: LoaderResult, windows_per_track: int) -> dict:
    runs = result.runs
    rate = [r.tracks / r.seconds for r in runs]
    return {
        "loader": result.name, "workers": result.workers, "rounds": len(runs), "tracks": runs[0].tracks,
        "tracks_per_s": median_min_max(rate),
        "windows_per_s": median_min_max([x * windows_per_track for x in rate]),
        "mb_per_s": median_min_max([r.bytes / r.seconds / 1e6 for r in runs]),
        "first_batch_s": median_min_max([r.first_batch for r in runs]),
        "cpu_s_per_track": median_min_max([r.cpu_seconds / max(1, r.tracks) for r in runs]),
        "peak_rss_mb": median_min_max([r.peak_rss / 2**20 for r in runs]),
        "rss_added_mb": median_min_max([r.rss_added / 2**20 for r in runs]),
        "passes_per_round": [r.passes for r in runs],
        "tracks_per_s_rounds": rate,
    }


def add_ratios(rows: list[dict]) -> None:
    """Each loader against the naive ones and the physical limit, at the same worker count."""
    for row in rows:
        same = {r["loader"]: r for r in rows if r["workers"] == row["workers"]}
        rate = row["tracks_per_s"]["median"]
        for ref in ("naive", "naive-mp3", "raw"):
            if ref in same and ref != row["loader"]:
                key = "share_of_raw" if ref == "raw" else f"x_{ref.replace('-', '_')}"
                row[key] = rate / same[ref]["tracks_per_s"]["median"]
                # paired: the ratio within each round (run back to back), then the median of those
                row[key + "_paired"] = statistics.median(
                    a / b for a, b in zip(row["tracks_per_s_rounds"], same[ref]["tracks_per_s_rounds"]))


def run_bench(config: BenchConfig, log=print) -> dict:
    from fmashard.bench.loaders import make_runners
    from fmashard.bench.report import environment

    runners = make_runners(config)
    results = {key: LoaderResult(*key) for key in runners}
    for round_index in range(config.rounds + 1):  # round 0 is the warm-up
        for key, runner in runners.items():
            run = measure(runner, config.min_seconds)
            if round_index:
                results[key].runs.append(run)
        log(f"round {round_index}/{config.rounds}{' (warm-up)' if not round_index else ''} done")
    windows = WindowSpec().count
    rows = [summarize(r, windows) for r in results.values()]
    add_ratios(rows)
    report = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
              "environment": environment(), "results": rows}
    if config.with_model:
        from fmashard.bench.model import model_throughput

        report["model"] = model_throughput(config)
    return report


def check_same_tracks(report: dict) -> None:
    counts = {(r["loader"], r["workers"]): r["tracks"] for r in report["results"]}
    if len(set(counts.values())) > 1:
        raise UserError(f"loaders saw different numbers of tracks: {counts}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

