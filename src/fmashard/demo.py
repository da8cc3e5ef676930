"""`fmashard demo`: the whole product on a generated FMA-format corpus, on the CPU, in minutes.

corpus (real MP3s) -> shards (+ the notebook's .pt layout for the naive baseline) -> a short --amp
training run with validation -> a short side-by-side benchmark against the naive loaders.
Re-running in the same folder reuses the corpus and the finished builds (builds are resumable).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str
    genres: int = 8
    tracks_per_genre: int = 12       # 10 training tracks per genre: a CPU epoch in about a minute
    seed: int = 0
    model: str = "soundnet"
    epochs: int = 2
    window_seconds: float = 3.0      # SoundNet's shortest practical window (it needs >= 2.58 s)
    windows: int = 1                 # one random crop per track and step: bf16 convolutions are slow on CPUs
    bench_rounds: int = 2
    bench_tracks: int | None = None  # all training tracks: a tiny run would be all shuffle-buffer tail
    workers: int | None = None

    def __post_init__(self):
        """Every option is checked here, before a corpus is made, a build runs or a model trains."""
        from shard_tools.build import BuildConfig
        from shard_tools.demo_corpus import DemoCorpusConfig

        DemoCorpusConfig(Path(self.out_dir or "."), self.genres, self.tracks_per_genre, self.seed)
        BuildConfig(fma_dir="fma", out="out", workers=self.workers, seed=self.seed)
        self.train_config("shards", "run")
        if self.bench_rounds < 1 or (self.bench_tracks is not None and self.bench_tracks < 1):
            from fmashard.errors import UserError

            raise UserError(f"bench: rounds and tracks must be >= 1, got {self.bench_rounds}, {self.bench_tracks}")

    def train_config(self, shards: str, run_dir: str, training_tracks: int = 8):
        """Batches of 8 tracks, fewer when the training split is smaller (a tiny corpus must still train)."""
        from fmashard.train import TrainConfig

        batch_size = max(2, min(8, training_tracks))
        return TrainConfig(shards=shards, out=run_dir, model=self.model, epochs=self.epochs, amp=True,
                           batch_size=batch_size,
                           seed=self.seed, window_seconds=self.window_seconds, windows=self.windows,
                           random_crop=True, precise_bn=8, progress=False)


def _step(title: str, echo) -> float:
    echo(f"\n== {title}")
    return time.perf_counter()


def make_or_reuse_corpus(config: DemoConfig, echo) -> Path:
    from shard_tools.demo_corpus import make_demo_corpus

    fma = Path(config.out_dir) / "fma"
    if (fma / "fma_metadata" / "tracks.csv").exists():
        echo(f"reusing the corpus in {fma}")
        return fma
    summary = make_demo_corpus(fma, genres=config.genres, tracks_per_genre=config.tracks_per_genre,
                               seed=config.seed)
    echo(summary.format())
    return fma


def build_both(config: DemoConfig, fma: Path, echo) -> tuple[Path, Path]:
    from shard_tools.build import BuildConfig, build_shards

    out = Path(config.out_dir)
    reports = {}
    for layout in ("shards", "files"):
        reports[layout] = build_shards(BuildConfig(fma_dir=fma, out=out / layout, layout=layout,
                                                   workers=config.workers, shard_size="64MB", seed=config.seed))
        echo(reports[layout].summary())
    return out / "shards", out / "files"


def train_small(config: DemoConfig, shards: Path, echo):
    from fmashard.train import train

    run_dir = Path(config.out_dir) / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
    tracks = int(manifest["splits"]["training"]["num_samples"])
    return train(config.train_config(str(shards), str(run_dir), tracks))


def bench_short(config: DemoConfig, shards: Path, files: Path, fma: Path, echo) -> dict:
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.report import print_table
    from fmashard.bench.runner import run_bench
    from fmashard.storage import write_json

    report = run_bench(BenchConfig(shards=str(shards), naive=str(files), fma_dir=str(fma),
                                   loaders=("naive-mp3", "naive", "fmashard-host", "fmashard", "raw"),
                                   rounds=config.bench_rounds, max_tracks=config.bench_tracks, seed=config.seed,
                                   min_seconds=0.5),
                       log=lambda msg: None)
    print_table(report)
    write_json(Path(config.out_dir) / "bench.json", report)
    return report


def run_demo(config: DemoConfig, echo=print) -> dict:
    started = time.perf_counter()
    t = _step(f"1/4 demo corpus ({config.genres} genres x {config.tracks_per_genre} tracks, real MP3s)", echo)
    fma = make_or_reuse_corpus(config, echo)
    echo(f"({time.perf_counter() - t:.0f} s)")
    t = _step("2/4 fmashard build: shards, and the notebook's .pt files for the naive baseline", echo)
    shards, files = build_both(config, fma, echo)
    echo(f"({time.perf_counter() - t:.0f} s)")
    t = _step(f"3/4 fmashard train --model {config.model} --amp --epochs {config.epochs} --window-seconds "
              f"{config.window_seconds:g} --windows {config.windows} --random-crop (CPU)", echo)
    result = train_small(config, shards, echo)
    echo(f"({time.perf_counter() - t:.0f} s)")
    t = _step("4/4 fmashard bench (short): every loader over the same tracks", echo)
    report = bench_short(config, shards, files, fma, echo)
    echo(f"({time.perf_counter() - t:.0f} s)")
    rows = {(r["loader"], r["workers"]): r for r in report["results"]}
    chance = 1 / config.genres
    summary = {"val_track_acc": result.best_val_track_acc, "chance": chance,
               "x_naive": rows[("fmashard", 0)].get("x_naive"),
               "x_naive_mp3": rows[("fmashard", 0)].get("x_naive_mp3"),
               "host_x_naive": rows[("fmashard-host", 0)].get("x_naive"), "seconds": time.perf_counter() - started}
    acc = summary["val_track_acc"]
    echo(f"\nvalidation track accuracy (majority vote): {'n/a' if acc is None else f'{acc:.1%}'} "
         f"(chance {chance:.1%})")
    echo(f"fmashard to float windows: {summary['x_naive']:.1f}x the naive .pt loader, "
         f"{summary['x_naive_mp3']:.0f}x the decode-every-epoch MP3 loader; host path "
         f"{summary['host_x_naive']:.1f}x naive (this machine, {report['results'][0]['tracks']} tracks, "
         f"{config.bench_rounds} rounds)")
    echo(f"demo done in {summary['seconds']:.0f} s; outputs in {config.out_dir}")
    return summary
