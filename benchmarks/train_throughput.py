"""Training throughput: real shards (ShardLoader -> DeviceFeeder -> train_step) against synthetic batches
already on the device (train_step alone), same model, batch and precision.

    .venv/bin/python benchmarks/train_throughput.py [--fma-dir DIR] [--models resnet1d,soundnet,soundnet-large]
        [--precisions fp32,bf16] [--batch-size 1] [--windows 2] [--window-seconds 1] [--warmup 1] [--steps 3]
        [--rounds 3]

The shards are the demo corpus built at full length (30-s clips, pcm16; without --fma-dir a 4-genre x 10-track
demo corpus is generated into --work-dir and reused by later runs).  Method, per model and precision: a fresh
model (same seed), one optimizer step per batch of B tracks x W windows (the training loop's `train_step`, with
the run's autocast ctx), `--warmup` untimed steps in each mode, then `--rounds` rounds of (`--steps` timed steps
synthetic, `--steps` timed steps real); the loader keeps streaming across rounds, and reading, int16 -> float
windows and the host->device copy are all inside the real timing.  Best round of each mode (other load on a
shared machine only slows a round down; the mean over rounds is recorded too).  A window shorter than a model's
minimum is raised to it (soundnet needs 2.6 s).  The ratio real/synthetic says how well the loader hides behind
compute.  Writes benchmarks/results/train_throughput.json with the command, commit, machine and load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from fmashard.bench.report import commit as git_commit

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    flags = Path("/proc/cpuinfo").read_text()
    return {"cpu_model": cpu, "cores": os.cpu_count(), "ram_gb": round(mem / 2**20, 1), "git_commit": git_commit(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_bf16_native": "avx512_bf16" in flags or "amx_bf16" in flags}


def demo_shards(args) -> Path:
    """Full-length demo shards (30-s clips), built once into the work dir."""
    from shard_tools.build import BuildConfig, build_shards
    from shard_tools.demo_corpus import make_demo_corpus

    fma_dir = args.fma_dir
    if fma_dir is None:
        fma_dir = args.work_dir / "fma"
        if not (fma_dir / "fma_metadata" / "tracks.csv").is_file():
            print(f"writing the demo corpus into {fma_dir} ...", flush=True)
            make_demo_corpus(fma_dir, genres=4, tracks_per_genre=10, seed=0)
    out = args.work_dir / f"shards-{Path(fma_dir).resolve().name}"
    if not (out / "manifest.json").is_file():
        print(f"building 30-s shards into {out} ...", flush=True)
        build_shards(BuildConfig(fma_dir=str(fma_dir), out=str(out), subset="small", workers=os.cpu_count() or 1,
                                 shard_size="64MB"))
    return out


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(model_name: str, precision: str, spec, args, device) -> dict:
    import torch

    from fmashard.data.device import DeviceFeeder
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.windows import WindowSpec
    from fmashard.models import build_model
    from fmashard.train.loop import train_step
    from fmashard.train.precision import autocast_context

    window = round(args.window_seconds * spec.sample_rate)
    while True:  # raise the window to the model's minimum (0.1-s steps)
        try:
            build_model(model_name, len(spec.vocabulary), window)
            break
        except Exception:  # noqa: BLE001 - UserError: window too short for this model
            window += spec.sample_rate // 10
    windows = WindowSpec(window=window, count=args.windows, overlap=0.25)
    ctx, dtype = autocast_context(device, precision != "fp32", precision if precision != "fp32" else "auto")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def fresh():
        torch.manual_seed(0)
        model = build_model(model_name, len(spec.vocabulary), window).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def sync(loss):
        loss.item()  # waits for the device

    loader = ShardLoader(spec, LoaderConfig(batch_size=args.batch_size, shuffle=True, seed=0,
                                            num_workers=args.workers))
    feeder = iter(DeviceFeeder(endless(loader), device, windows))
    first = next(feeder)
    synthetic = (first.windows.clone(), first.labels.clone())
    real_model, real_opt = fresh()
    synth_model, synth_opt = fresh()
    for _ in range(args.warmup):
        sync(train_step(synth_model, synth_opt, scaler, ctx, *synthetic)[0])
        batch = next(feeder)
        sync(train_step(real_model, real_opt, scaler, ctx, batch.windows, batch.labels)[0])
    synth_rounds, real_rounds = [], []   # windows/s of each round
    for _ in range(args.rounds):
        t, windows = time.perf_counter(), 0
        for _ in range(args.steps):
            loss, _ = train_step(synth_model, synth_opt, scaler, ctx, *synthetic)
            windows += synthetic[0].shape[0]
        sync(loss)
        synth_rounds.append(windows / (time.perf_counter() - t))
        t, windows = time.perf_counter(), 0
        for _ in range(args.steps):
            batch = next(feeder)
            loss, _ = train_step(real_model, real_opt, scaler, ctx, batch.windows, batch.labels)
            windows += batch.windows.shape[0]
        sync(loss)
        real_rounds.append(windows / (time.perf_counter() - t))
    # best round of each mode: other load on a shared machine only ever slows a round down
    synth_wps, real_wps = max(synth_rounds), max(real_rounds)
    return {"model": model_name, "precision": precision, "window_samples": window,
            "window_seconds": round(window / spec.sample_rate, 3), "windows_per_track": args.windows,
            "batch_tracks": args.batch_size, "windows_per_step": args.batch_size * args.windows,
            "timed_steps": args.steps * args.rounds,
            "synthetic_windows_per_s": round(synth_wps, 3), "real_windows_per_s": round(real_wps, 3),
            "real_tracks_per_s": round(real_wps / args.windows, 3),
            "seconds_per_step_synthetic": round(args.batch_size * args.windows / synth_wps, 3),
            "seconds_per_step_real": round(args.batch_size * args.windows / real_wps, 3),
            "rounds_synthetic_windows_per_s": [round(x, 3) for x in synth_rounds],
            "rounds_real_windows_per_s": [round(x, 3) for x in real_rounds],
            "ratio_real_over_synthetic": round(real_wps / synth_wps, 4),
            "ratio_of_means": round(sum(real_rounds) / sum(synth_rounds), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fma-dir", type=Path, help="FMA folder (default: generate the demo corpus)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/fmashard-train-bench"))
    parser.add_argument("--models", default="soundnet,resnet1d,soundnet-large")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=1, help="tracks per step")
    parser.add_argument("--windows", type=int, default=2, help="windows per track")
    parser.add_argument("--window-seconds", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--min-ratio", type=float, default=0.95, help="exit 1 when real/synthetic falls below")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()

    from fmashard.data.device import resolve_device
    from fmashard.data.sources import resolve_source

    started, load_at_start = time.perf_counter(), os.getloadavg()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    spec = resolve_source(str(demo_shards(args)), "training")
    device = resolve_device(args.device)
    results = []
    for model_name in args.models.split(","):
        for precision in args.precisions.split(","):
            r = measure(model_name, precision, spec, args, device)
            results.append(r)
            print(f"{r['model']:<15}{r['precision']:<6}{r['window_seconds']:>5} s x {r['windows_per_step']:<3}"
                  f"synthetic {r['synthetic_windows_per_s']:8.2f} windows/s   real {r['real_windows_per_s']:8.2f} "
                  f"windows/s   real/synthetic {r['ratio_real_over_synthetic']:.1%}", flush=True)
    worst = min(r["ratio_real_over_synthetic"] for r in results)
    record = {"benchmark": "train_throughput",
              "command": " ".join([".venv/bin/python", "benchmarks/train_throughput.py",
                                   *map(shlex.quote, sys.argv[1:])]),
              "method": " ".join(__doc__.split("\n\n", 2)[2].split()),
              "machine": {**machine(), "device": str(device), "load_average_at_start": load_at_start,
                          "load_average_at_end": os.getloadavg()},
              "data": {"shards": str(spec.shards[0].url.rsplit("/", 2)[0]), "clip_samples": spec.clip_samples,
                       "training_tracks": spec.num_samples, "codec": spec.codec},
              "results": results, "worst_ratio_real_over_synthetic": worst, "min_ratio": args.min_ratio,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    verdict = "OK" if worst >= args.min_ratio else f"BELOW {args.min_ratio:.0%}"
    print(f"worst real/synthetic {worst:.1%} ({verdict}); {record['seconds']} s; wrote {args.out}")
    if worst < args.min_ratio:
        sys.exit(1)


if __name__ == "__main__":
    main()
