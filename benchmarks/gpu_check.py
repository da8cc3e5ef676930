"""The GPU path measured in one command, on a machine lent for minutes with no network (issue 17).

    python benchmarks/gpu_check.py --out DIR                        # on the GPU machine: under 6 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --out DIR    # the CPU test (tests/test_gpu_check.py)

Runs from the checkout (fmashard is not installed) with torch, numpy, rich, psutil and braceexpand only
(benchmarks/README.md, "GPU check": the wheels to carry).  It writes its own data into --work (a temporary
folder, removed afterwards): generated 30-s audio as pcm16 shards through shard_tools' ShardWriter (2,000
training tracks, a small validation split) and the same audio as the notebook's float32 .pt files.
Measured, each min/median/max over --rounds rounds after a warm-up pass (a round repeats its pass until
1 s has passed; one setting after another, so worker processes do not pile up):
  1. raw sequential read of the shard files; fmashard's host path, read threads 2/4/8 x workers 0/2/4
  2. the full path to float windows on the device (best read threads, each worker count), and the device
     time per batch of the copy and of decode + windows (CUDA events)
  3. the notebook's naive loader, workers 0/4/8/12, with pin_memory and persistent workers on CUDA
  4. training throughput of resnet1d / soundnet / soundnet-large (bf16 on CUDA) on the shards against
     synthetic batches already on the device (the ceiling)
  5. host-device synchronisations per step of the real training loop, 50 steps (set_sync_debug_mode)
  6. peak GPU memory per part and peak host RSS
Writes DIR/gpu_check.json and DIR/gpu_check.md; exit 1 when a part failed (its error is recorded).
"""
# ruff: noqa: E402 - the imports of fmashard follow the check that names what is missing
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("torch", "numpy", "rich", "psutil", "braceexpand", "fmashard", "shard_tools")


def findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_modules() -> None:
    """fmashard and shard_tools from this checkout; one line naming every module missing."""
    for path in (ROOT / "src", ROOT, ROOT / "benchmarks"):   # benchmarks/: gpu_check_data, gpu_check_report
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    missing = [name for name in NEEDED if not findable(name)]
    if missing:
        print(f"error: gpu_check needs {', '.join(missing)}, not importable here: pip install --no-deps the "
              "wheels listed in benchmarks/README.md (section GPU check)", file=sys.stderr)
        raise SystemExit(2)


require_modules()
import torch
from torch.utils.data import DataLoader

from fmashard.bench.config import BenchConfig
from fmashard.bench.loaders import RawPass, fmashard_pass
from fmashard.bench.naive import NaiveFileDataset
from fmashard.bench.report import environment as bench_environment
from fmashard.bench.runner import LoaderResult, summarize
from fmashard.bench.timing import measure, timed
from fmashard.data.device import DeviceFeeder, resolve_device
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec, make_windows
from fmashard.errors import UserError
from fmashard.models import build_model
from fmashard.train import TrainConfig, train
from fmashard.train.loop import train_step
from fmashard.train.precision import autocast_context
from gpu_check_data import CLIP, SAMPLE_RATE, TINY, VOCAB, Plan, write_data  # noqa: E402 - benchmarks/, beside this script
from gpu_check_report import markdown, mmm  # noqa: E402


class ShardPass:
    """fmashard's loader at one setting; each pass the next epoch (workers made once, as in training)."""

    def __init__(self, spec, plan: Plan, threads: int, workers: int, device, full: bool):
        self.loader = ShardLoader(spec, LoaderConfig(batch_size=plan.batch, num_workers=workers, read_threads=threads))
        config = BenchConfig(shards="-", loaders=("fmashard",), batch_size=plan.batch)
        self.args, self.epoch = (spec, config, device, full, plan.tracks), 0

    def __call__(self):
        self.loader.set_epoch(self.epoch)
        self.epoch += 1
        return fmashard_pass(self.loader, *self.args)


class NaivePass:
    """The notebook's loader (fmashard.bench.naive) given every chance: workers made once, pin_memory."""

    def __init__(self, files: Path, plan: Plan, workers: int, device):
        self.device, self.limit, self.cuda = device, plan.tracks, device.type == "cuda"
        self.loader = DataLoader(NaiveFileDataset(str(files), "training"), batch_size=plan.batch, shuffle=True,
                                 num_workers=workers, generator=torch.Generator().manual_seed(0),
                                 pin_memory=self.cuda, persistent_workers=workers > 0)

    def __call__(self):
        def to_device():   # as fmashard.bench.loaders.naive_pass
            for windows, labels in self.loader:
                yield [w.to(self.device, non_blocking=True) for w in windows], labels.to(self.device)
        run = timed(to_device(), lambda b: len(b[1]), CLIP * 4, self.limit)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return run


def measure_rows(ctx, settings: dict) -> dict:
    """{row fields (pairs): factory of a pass} -> rows (warm-up pass, then `rounds` measurements) and the best."""
    rows = []
    for fields, factory in settings.items():
        fields, runner = dict(fields), factory()
        runner()   # warm-up: workers start, page cache, allocator
        runs = [measure(runner, ctx.plan.min_seconds) for _ in range(ctx.plan.rounds)]
        del runner
        gc.collect()   # its DataLoader workers end here
        rows.append({**fields, **summarize(LoaderResult(fields["loader"], fields.get("workers", 0), runs), 7)})
        ctx.log(f"  {fields}: {rows[-1]['tracks_per_s']['median']:.0f} tracks/s")
    return {"rows": rows, "best": max(rows, key=lambda r: r["tracks_per_s"]["median"])}


def host_part(ctx) -> dict:
    raw = measure_rows(ctx, {(("loader", "raw"),): lambda: RawPass(ctx.spec, ctx.plan.tracks)})["best"]
    out = measure_rows(ctx, {(("loader", "fmashard-host"), ("read_threads", t), ("workers", w)):
                             partial(ShardPass, ctx.spec, ctx.plan, t, w, ctx.device, False)
                             for t in ctx.plan.threads for w in ctx.plan.workers})
    for row in out["rows"]:
        row["share_of_raw"] = row["tracks_per_s"]["median"] / raw["tracks_per_s"]["median"]
    ctx.host_best = (out["best"]["read_threads"], out["best"]["workers"])
    return {"raw": raw, **out}


def device_part(ctx) -> dict:
    threads = ctx.host_best[0]
    out = measure_rows(ctx, {(("loader", "fmashard"), ("read_threads", threads), ("workers", w)):
                             partial(ShardPass, ctx.spec, ctx.plan, threads, w, ctx.device, True)
                             for w in ctx.plan.workers})
    return {**out, "per_batch": device_time_per_batch(ctx)}


def device_time_per_batch(ctx) -> dict:
    """The device's own time for a batch: the host->device copy, then decode + windows (CUDA events; on a
    CPU the wall time of the same calls)."""
    host = next(iter(ShardLoader(ctx.spec, LoaderConfig(batch_size=ctx.plan.batch))))
    n, cuda, labels, marks = ctx.plan.device_batches, ctx.device.type == "cuda", host.labels.to(ctx.device), []

    def mark():
        marks.append(torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter())
        if cuda:
            marks[-1].record()
    mark()
    for _ in range(n):
        audio = host.rows().to(ctx.device, non_blocking=True)
    mark()
    for _ in range(n):
        make_windows(audio[:, : host.audio.shape[1]], labels, WindowSpec())
    mark()
    if cuda:
        torch.cuda.synchronize(ctx.device)
    copy_ms, windows_ms = ((a.elapsed_time(b) if cuda else (b - a) * 1e3) / n for a, b in zip(marks, marks[1:]))
    nbytes = host.rows().numel() * host.rows().element_size()
    return {"batches": n, "tracks_per_batch": len(host), "timer": "cuda events" if cuda else "wall", "copy_ms": copy_ms,
            "decode_windows_ms": windows_ms, "copy_gb_per_s": nbytes / copy_ms / 1e6 if copy_ms else None}


def naive_part(ctx) -> dict:
    out = measure_rows(ctx, {(("loader", "naive"), ("workers", w), ("pin_memory", ctx.device.type == "cuda")):
                             partial(NaivePass, ctx.work / "files", ctx.plan, w, ctx.device)
                             for w in ctx.plan.naive_workers})
    full = ctx.report.get("device_path", {}).get("best")
    if full:
        out["fmashard_best_over_naive_best"] = full["tracks_per_s"]["median"] / out["best"]["tracks_per_s"]["median"]
    return out


def model_window(name: str, plan: Plan) -> int:
    window = round(plan.train_window_s * SAMPLE_RATE)
    while True:   # raise the window to the model's minimum, in 0.1-s steps
        try:
            build_model(name, len(VOCAB), window)
            return window
        except UserError:   # too short for this model
            window += SAMPLE_RATE // 10


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def precision_args(ctx) -> tuple[bool, str]:
    return ctx.precision != "fp32", ctx.precision if ctx.precision != "fp32" else "auto"


def train_model(ctx, name: str) -> dict:
    """Windows/s of train_step on real batches (ShardLoader -> DeviceFeeder) and on one batch already on the
    device; a fresh model each (same seed); the device is synchronised at each round's end only."""
    plan, device, (threads, workers) = ctx.plan, ctx.device, ctx.host_best
    window = WindowSpec(window=model_window(name, plan), count=plan.train_windows)
    autocast, dtype = autocast_context(device, *precision_args(ctx))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loader = ShardLoader(ctx.spec, LoaderConfig(batch_size=plan.batch, shuffle=True, num_workers=workers,
                                                read_threads=threads))
    feeder = iter(DeviceFeeder(endless(loader), device, window))
    first = next(feeder)
    synthetic = (first.windows.clone(), first.labels.clone())
    models = {}
    for mode in ("synthetic", "real"):
        torch.manual_seed(0)
        model = build_model(name, len(VOCAB), window.window).to(device)
        models[mode] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))

    def steps(mode: str, count: int) -> int:
        windows = 0
        for _ in range(count):
            batch = synthetic if mode == "synthetic" else next(feeder)
            inputs, labels = batch if mode == "synthetic" else (batch.windows, batch.labels)
            train_step(*models[mode], scaler, autocast, inputs, labels)
            windows += inputs.shape[0]
        return windows
    sync = partial(torch.cuda.synchronize, device) if device.type == "cuda" else (lambda: None)
    for mode in models:
        steps(mode, plan.train_warmup)
    sync()
    rates = {mode: [] for mode in models}
    for _ in range(plan.rounds):
        for mode in models:
            start = time.perf_counter()
            windows = steps(mode, plan.train_steps)
            sync()
            rates[mode].append(windows / (time.perf_counter() - start))
    real, synth = rates["real"], rates["synthetic"]
    return {"model": name, "precision": ctx.precision, "window_samples": window.window,
            "windows_per_step": plan.batch * window.count, "timed_steps": plan.train_steps * plan.rounds,
            "synthetic_windows_per_s": mmm(synth), "real_windows_per_s": mmm(real),
            "ratio": statistics.median(real) / statistics.median(synth),
            "ratio_paired": statistics.median(r / s for r, s in zip(real, synth))}


def training_part(ctx) -> dict:
    rows = [ctx.part(f"train {name}", partial(train_model, ctx, name)) for name in ctx.plan.models]
    return {"models": rows}


def syncs_part(ctx) -> dict:
    """The real training loop (fmashard.train.train, bar on) for warm-up + counted steps; on CUDA each
    synchronising call in a counted step is a warning of set_sync_debug_mode("warn"), with its Python site."""
    plan, cuda = ctx.plan, ctx.device.type == "cuda"
    last = plan.sync_warmup + plan.sync_steps
    amp, amp_dtype = precision_args(ctx)
    config = TrainConfig(shards=str(ctx.work / "shards"), out=str(ctx.work / "run-syncs"), model=plan.sync_model,
                         epochs=1, batch_size=plan.batch, amp=amp, amp_dtype=amp_dtype, device=str(ctx.device),
                         workers=ctx.host_best[1], read_threads=ctx.host_best[0], max_steps=last, checkpoint_every=0,
                         progress=True, verbose=False, windows=plan.train_windows,
                         window_seconds=model_window(plan.sync_model, plan) / SAMPLE_RATE)
    marks = []

    def on_step(step, epoch):
        if step >= plan.sync_warmup:
            marks.append((len(caught), time.perf_counter()))
        if cuda and step in (plan.sync_warmup, last):
            torch.cuda.set_sync_debug_mode("warn" if step == plan.sync_warmup else 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            train(config, on_step=on_step)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    per_step = [[w for w in caught[a:b] if "synchroniz" in str(w.message)] for (a, _), (b, _) in zip(marks, marks[1:])]
    out = {"model": plan.sync_model, "steps": len(per_step),
           "steps_per_s": len(per_step) / (marks[-1][1] - marks[0][1])}
    if not cuda:
        return {**out, "measured": False, "reason": "torch.cuda.set_sync_debug_mode counts CUDA synchronisations only"}
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for step in per_step for w in step)
    return {**out, "measured": True, "syncs_per_step": [len(s) for s in per_step], "total": sum(sites.values()),
            "max_per_step": max(map(len, per_step), default=0), "sites": dict(sites.most_common(10))}


def environment(device) -> dict:
    gpu = {"name": None, "driver": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.split()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = None
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "driver": driver,
               "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}
    return {**bench_environment(), "gpu": gpu, "torch": torch.__version__, "cpu_count": os.cpu_count()}


class Context:
    """One run: its settings, device, data folder, the report so far and the best host setting."""

    def __init__(self, args, plan: Plan, device, work: Path):
        self.args, self.plan, self.device, self.work = args, plan, device, work
        self.precision = args.precision if args.precision != "auto" else "bf16" if device.type == "cuda" else "fp32"
        self.started, self.report, self.failed = time.perf_counter(), {}, False
        self.host_best = (plan.threads[0], plan.workers[0])   # (read threads, workers), set by host_part
        self.spec = None

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {text}", flush=True)

    def part(self, name: str, fn) -> dict:
        """fn() with its seconds and peak GPU memory; an error is recorded, not raised; past --budget: skipped."""
        if time.perf_counter() - self.started > self.args.budget:
            return {"part": name, "skipped": f"--budget {self.args.budget} s spent"}
        self.log(name)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others
            self.failed = True
            traceback.print_exc()
            return {"part": name, "error": f"{type(exc).__name__}: {exc}"}
        out["seconds"] = round(time.perf_counter() - start, 1)
        if cuda:
            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20)
        return out


def run_all(ctx: Context) -> int:
    report, plan, args = ctx.report, ctx.plan, ctx.args
    report["environment"] = environment(ctx.device)
    report["config"] = {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()},
                        "device": str(ctx.device), "tiny": args.tiny, "precision": ctx.precision,
                        "torch_threads": torch.get_num_threads()}
    ctx.log(f"device {ctx.device}, {os.cpu_count()} CPUs, data in {ctx.work}")
    report["data"] = write_data(ctx.work, plan, ctx.log)
    ctx.spec = resolve_source(str(ctx.work / "shards"), "training")
    for key, fn in (("host_path", host_part), ("device_path", device_part), ("naive", naive_part),
                    ("training", training_part), ("syncs", syncs_part)):
        report[key] = ctx.part(key, partial(fn, ctx))
    report["memory"] = {"peak_gpu_mb": {k: v.get("peak_gpu_mb") for k, v in report.items() if "seconds" in v},
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
    report["seconds"] = round(time.perf_counter() - ctx.started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    ctx.log(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md")
    return 1 if ctx.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--tiny", action="store_true", help="a few tracks, one round: checks the script only")
    parser.add_argument("--work", type=Path, help="data folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--tracks", type=int, help="training tracks (default 2000; --tiny 8)")
    parser.add_argument("--rounds", type=int, help="measured rounds (default 3; --tiny 1)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="training; auto: bf16 on CUDA, fp32 on a CPU")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds after which the parts left are skipped")
    args = parser.parse_args()
    plan = TINY if args.tiny else Plan()
    plan = replace(plan, tracks=args.tracks or plan.tracks, rounds=args.rounds or plan.rounds)
    work = args.work or Path(tempfile.mkdtemp(prefix="fmashard-gpu-check-"))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))   # a timeout still cleans up
    try:
        work.mkdir(parents=True, exist_ok=True)
        return run_all(Context(args, plan, resolve_device(args.device), work))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
