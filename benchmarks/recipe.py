"""The default training recipe against the notebook's, on the demo corpus and on a harder generated one.

    .venv/bin/python benchmarks/recipe.py [--epochs 12] [--seed 0] [--corpora demo,overlap] [--mulaw8 overlap]
        [--out results/recipe.json]

Method: each corpus is built once into shards (6-s clips); then the same `fmashard.train` run twice with the
same model, windows, batch, epochs and seed: once with the defaults (AdamW, warm-up + cosine, random crops,
gain/polarity, precise BN on 8 batches) and once with the notebook's recipe (`NOTEBOOK_RECIPE`: plain Adam at a
constant rate, fixed windows, no augmentation, no BatchNorm recalibration); on the `--mulaw8` corpora the
defaults run once more on a `--codec mulaw8` build of the same tracks (the codec's cost in accuracy). Recorded
per epoch: validation track accuracy (vote and mean logits) and loss; and whether the last three epochs' mean-
logits track accuracy stays within +-0.05 of their mean and ends above the notebook's. resnet1d on 1-s windows
(2 per track, no overlap), on the CPU; all runs go in parallel processes of one torch thread each (a shared
2-core machine: seconds are not comparable).

Corpora:
- demo: the 4-genre x 10-track demo corpus (`shard_tools.demo_corpus`, real MP3s; the tests' cached copy is
  reused when it is there): 31 training, 4 validation tracks (so accuracy moves in steps of 0.25).
- overlap: generated here, 5 classes x 24 tracks of 6 s written as WAV and built through `--corpus` (a folder per
  class, hash split 50,40,10: 60 training, 44 validation tracks).  A class is a harmonic tone whose pitch is
  drawn around the class's centre (2 semitones apart, spread 1.2 semitones: neighbouring classes overlap),
  with a class-typical but overlapping tremolo rate and harmonic tilt, under noise at a random 0-12 dB SNR:
  no class is separable by one feature.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # shard_tools, when run from a checkout without installing

from fmashard.train import TrainConfig, train  # noqa: E402
from fmashard.train.config import NOTEBOOK_RECIPE  # noqa: E402

RUN = dict(model="resnet1d", window_seconds=1.0, windows=2, overlap=0.0, batch_size=8, seed=0, lr=1e-3,
           verbose=False, progress=False)
RATE = 22050


def demo_corpus(work: Path) -> Path:
    """The tests' cached 4x10 demo corpus (same generator source), else a fresh one in `work`."""
    import shard_tools.demo_corpus as demo

    digest = hashlib.sha256(Path(demo.__file__).read_bytes()).hexdigest()[:12]
    cached = ROOT / ".pytest_cache" / "d" / f"fmashard-demo-4x10-{digest}"
    if (cached / "fma_metadata" / "tracks.csv").is_file():
        return cached
    folder = work / "demo-fma"
    if not (folder / "fma_metadata" / "tracks.csv").is_file():
        demo.make_demo_corpus(folder, genres=4, tracks_per_genre=10, seed=0)
    return folder


def overlap_track(label: int, rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """One track of class `label`: see the module docstring."""
    t = np.arange(int(seconds * RATE)) / RATE
    semitone = 2.0 * label + rng.normal(0.0, 1.2)
    f0 = 196.0 * 2 ** (semitone / 12)
    tilt = 0.5 + 0.08 * label + rng.normal(0.0, 0.1)          # harmonic k has weight k ** -tilt ... (overlapping)
    x = sum(k ** -(3 * tilt) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 7))
    tremolo = 2.0 + 0.8 * label + rng.normal(0.0, 1.0)
    x = x * (1 + 0.5 * np.sin(2 * np.pi * max(0.5, tremolo) * t))
    x = x / (np.abs(x).max() + 1e-9)
    snr_db = rng.uniform(0.0, 12.0)
    noise = rng.standard_normal(len(t))
    noise *= np.sqrt((x**2).mean() / (noise**2).mean() / 10 ** (snr_db / 10))
    y = x + noise
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def overlap_corpus(work: Path, classes: int = 5, per_class: int = 24) -> Path:
    root = work / "overlap-corpus"
    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(16)
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class{c}" / f"class{c}.{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, overlap_track(c, rng), RATE, subtype="PCM_16")
    done.write_text("ok")
    return root


def build(name: str, source: Path, work: Path, codec: str = "pcm16") -> Path:
    from shard_tools.build import BuildConfig, build_shards

    out = work / (f"{name}-shards" if codec == "pcm16" else f"{name}-shards-{codec}")
    if (out / "manifest.json").is_file():
        return out
    kind = dict(corpus=str(source), split_ratios="50,40,10") if name == "overlap" else dict(fma_dir=str(source))
    build_shards(BuildConfig(out=str(out), workers=2, shard_size="1MB", clip_seconds=6.0, min_seconds=5.0,
                             codec=codec, **kind))
    return out


def run(shards: Path, out: Path, epochs: int, recipe: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    started = time.perf_counter()
    result = train(TrainConfig(shards=str(shards), out=str(out), epochs=epochs, **{**RUN, **recipe}))
    history = result.history
    return {"seconds": round(time.perf_counter() - started, 1), "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "per_epoch": {key: [h[key] for h in history] for key in
                          ("val_track_acc_mean", "val_track_acc_vote", "val_loss", "train_loss")},
            "val_tracks": history[-1]["val_tracks"]}


def verdict(default: dict, notebook: dict) -> dict:
    last = default["per_epoch"]["val_track_acc_mean"][-3:]
    centre = sum(last) / len(last)
    spread = max(abs(v - centre) for v in last)
    nb_last = notebook["per_epoch"]["val_track_acc_mean"][-3:]
    return {"last3_default": last, "last3_notebook": nb_last, "default_last3_max_dev": round(spread, 4),
            "stable_within_0.05": spread <= 0.05 + 1e-9,
            "default_ends_higher": last[-1] > nb_last[-1],
            "default_last3_mean_higher": centre > sum(nb_last) / len(nb_last)}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--corpora", default="demo,overlap")
    parser.add_argument("--seed", type=int, default=RUN["seed"], help="of the model init, shuffle and draws")
    parser.add_argument("--mulaw8", default="overlap",
                        help="corpora whose default-recipe run is repeated on a --codec mulaw8 build ('' for none)")
    parser.add_argument("--work", default="/tmp/fmashard-recipe")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "recipe.json"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    report = {"command": "python benchmarks/recipe.py " + " ".join(sys.argv[1:]), "commit": commit,
              "dirty_tree": dirty, "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), CPU run",
              "run": {k: v for k, v in {**RUN, "seed": args.seed}.items() if k not in ("verbose", "progress")},
              "epochs": args.epochs,
              "notebook_recipe": NOTEBOOK_RECIPE, "corpora": {}}
    names = args.corpora.split(",")
    sources = {name: demo_corpus(work) if name == "demo" else overlap_corpus(work) for name in names}
    jobs = {}   # (corpus, run name) -> (shards, recipe)
    for name in names:
        shards = build(name, sources[name], work)
        jobs[name, "default"] = shards, {"seed": args.seed}
        jobs[name, "notebook"] = shards, {**NOTEBOOK_RECIPE, "seed": args.seed}
        if name in args.mulaw8.split(","):
            jobs[name, "default_mulaw8"] = build(name, sources[name], work, codec="mulaw8"), {"seed": args.seed}
    with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
        futures = {key: pool.submit(run, shards, work / "-".join((*key, f"seed{args.seed}")), args.epochs, recipe)
                   for key, (shards, recipe) in jobs.items()}
        for name in names:
            entry = {r: futures[n, r].result() for n, r in futures if n == name}
            entry["verdict"] = verdict(entry["default"], entry["notebook"])
            report["corpora"][name] = entry
            for r in entry:
                if r != "verdict":
                    print(name, r, json.dumps(entry[r]["per_epoch"]["val_track_acc_mean"]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v["verdict"] for k, v in report["corpora"].items()}, indent=2))


if __name__ == "__main__":
    main()
