"""`fmashard bench`: every loader over the same tracks, side by side in one process run.

Rounds are interleaved (A B C A B C ...) after one warm-up round, so drift in the machine's state
(page cache, CPU frequency, other load) hits every loader alike; in each round a loader repeats its
pass until it has run `min_seconds`.  Ratios are given as the ratio of medians and, paired, as the
median of the per-round ratios.  The loaders are listed in `fmashard.bench.config`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from fmashard.bench.config import BenchConfig, with_resolved_loaders
from fmashard.bench.loaders import make_runners, raw_read_size
from fmashard.bench.model import model_throughput
from fmashard.bench.report import environment, method_line
from fmashard.bench.timing import TimedPass, measure
from fmashard.data.device import resolve_device
from fmashard.data.loader import LoaderConfig
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError


@dataclass
class LoaderResult:
    name: str
    workers: int
    runs: list[TimedPass] = field(default_factory=list)


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
        "main_cpu_s_per_track": median_min_max([r.main_cpu_seconds / max(1, r.tracks) for r in runs]),
        "peak_rss_mb": median_min_max([r.peak_rss / 2**20 for r in runs]),
        "rss_added_mb": median_min_max([r.rss_added / 2**20 for r in runs]),
        "passes_per_round": [r.passes for r in runs],
        "tracks_per_s_rounds": rate,
    }


def references(loader: str) -> tuple[str, ...]:
    """The loaders a loader's row is compared with: the naive ones delivering the same thing, and raw."""
    if loader.endswith("-logmel"):
        return ("naive-logmel", "raw")
    return ("naive", "naive-mp3", "raw")


def add_ratios(rows: list[dict]) -> None:
    """Each loader against the naive ones and the physical limit, at the same worker count (log-mel
    loaders against the naive log-mel one only: the others deliver waveforms)."""
    for row in rows:
        same = {r["loader"]: r for r in rows if r["workers"] == row["workers"]}
        rate = row["tracks_per_s"]["median"]
        for ref in references(row["loader"]):
            if ref in same and ref != row["loader"]:
                key = "share_of_raw" if ref == "raw" else f"x_{ref.replace('-', '_')}"
                row[key] = rate / same[ref]["tracks_per_s"]["median"]
                # paired: the ratio within each round (run back to back), then the median of those
                row[key + "_paired"] = statistics.median(
                    a / b for a, b in zip(row["tracks_per_s_rounds"], same[ref]["tracks_per_s_rounds"]))


def run_bench(config: BenchConfig, log=print) -> dict:
    config = with_resolved_loaders(config, log)
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
    if "raw" in config.loaders:
        report["raw_read"] = f"raw: a plain readinto loop, one reused buffer of {raw_read_size()[1]}"
    if any(name.startswith("fmashard") for name in config.loaders):
        report["read_threads"] = READ_THREADS_NOTE
    report["method"] = method_line(report, resolve_device(config.device))
    if config.with_model:
        report["model"] = model_throughput(config)
    return report


READ_THREADS_NOTE = (f"fmashard loaders: {LoaderConfig.read_threads} read threads, one batch a job (the "
                     "default on every CPU: 1 ran at 55-65 % of a plain read loop on the Xeon of issue 27)")


def check_same_tracks(report: dict) -> None:
    counts = {(r["loader"], r["workers"]): r["tracks"] for r in report["results"]}
    if len(set(counts.values())) > 1:
        raise UserError(f"loaders saw different numbers of tracks: {counts}")

