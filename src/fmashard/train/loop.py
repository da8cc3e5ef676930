"""Training: `train(TrainConfig(...)) -> TrainResult`, one readable loop in `_train`.

    shards --ShardLoader--> host batches of B tracks --DeviceFeeder--> (B*W, 1, L) windows on the device
    --> ONE optimizer step per batch (all W windows of all B tracks) --> after each epoch: validation
    (loss, window accuracy, track accuracy by vote and by mean logits), metrics.jsonl, last.pt, best.pt.

Precision follows nanoGPT: one `ctx` (autocast bf16/fp16, or nullcontext) and `GradScaler(enabled=fp16)`,
so fp32, bf16 and fp16 share one code path.  Under `torchrun` the same loop runs DDP (see distributed.py).
`--resume` continues from last.pt exactly: the loader state gives the remaining samples in the same order,
and the DeviceFeeder's start_index keeps the random crops of the remaining batches.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from fmashard.train.checkpoint import append_jsonl, prepare_run_dir, rng_state, save_checkpoint, set_rng_state, write_json
from fmashard.data.device import DeviceFeeder
from fmashard.train.distributed import all_gather_int, all_reduce_sum, any_rank, broadcast_buffers, init_distributed
from fmashard.errors import UserError
from fmashard.train.evaluate import (AMP_DTYPES, EvalMetrics, EvaluateConfig, MetricTotals, autocast_context,  # noqa: F401
                               check_clip_length, evaluate, evaluate_checkpoint, fmt, labelled_split,
                               recalibrate_batchnorm)
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.models import MODELS, build_model, count_parameters
from fmashard.train.preflight import check_memory, writable_folder
from fmashard.train.display import Progress, compile_guard, stop_signals
from fmashard.data.windows import WindowSpec


class ConfigError(UserError, ValueError):
    """A bad training argument: a ValueError for library callers, a one-line exit 2 in the CLI."""


@dataclass(frozen=True)
class TrainConfig:
    shards: str                      # manifest / folder / URL; splits "training" and "validation" are used
    out: str                         # RUN_DIR
    model: str = "resnet1d"          # resnet1d | soundnet | soundnet-large
    epochs: int = 10
    batch_size: int = 8              # tracks per optimizer step (all their windows in one step)
    lr: float = 1e-3                 # Adam, as in the notebook
    amp: bool = False
    amp_dtype: str = "auto"          # auto (bf16 where supported, else fp16) | bf16 | fp16
    device: str = "auto"
    workers: int = 0                 # DataLoader worker processes (0: read in this process)
    read_threads: int = 2            # threads reading records at once (per process)
    random_crop: bool = False
    compile: bool = False
    seed: int = 0
    window_seconds: float = 5.0
    windows: int = 7
    overlap: float = 0.25
    shuffle_buffer: int = 64
    precise_bn: int = 0              # re-estimate BatchNorm statistics on this many training batches before
                                     # each validation (helps short runs; 0: off)
    max_steps: int | None = None     # stop after this many optimizer steps (counted over the whole run)
    checkpoint_every: int = 200      # steps between mid-epoch last.pt saves (0: epoch ends only)
    on_error: str = "raise"
    check_crc: bool = False          # check each sample's audio against the build's crc32 (LoaderConfig)
    endpoint_url: str | None = None  # sets AWS_ENDPOINT_URL
    resume: bool = False
    log_batches: bool = False        # RUN_DIR/steps.jsonl: the track ids of every step
    progress: bool | None = None     # rich bar; None: when stdout is a terminal and CI is unset
    verbose: bool = True             # print one line per epoch and a summary

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "shards", str(self.shards))
        set_(self, "out", str(self.out))
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("epochs", "batch_size", "windows", "shuffle_buffer", "read_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "checkpoint_every", "seed", "precise_bn"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp_dtype: must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if not self.window_seconds > 0:
            raise ConfigError(f"window_seconds: must be > 0, got {self.window_seconds}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap: must be in [0, 1), got {self.overlap}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: must be >= 1, got {self.max_steps}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error: must be raise or skip, got {self.on_error!r}")
        if not self.out:
            raise ConfigError("out: a run folder is required")
        if self.batch_size * self.windows < 2:
            raise ConfigError("batch_size: one track of one window per step cannot train BatchNorm; "
                              "use --batch-size >= 2 or --windows >= 2")

    def window_spec(self, sample_rate: int) -> WindowSpec:
        return WindowSpec.seconds(self.window_seconds, sample_rate, overlap=self.overlap, count=self.windows,
                                  random_crop=self.random_crop)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int                      # epochs completed (all of them, including before a resume)
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)   # this call's metrics.jsonl lines
    best_val_track_acc: float | None = None
    best_epoch: int | None = None
    interrupted: bool = False

    @property
    def last(self) -> dict | None:
        return self.history[-1] if self.history else None

    @property
    def val_track_acc(self) -> float | None:
        return self.last["val_track_acc_vote"] if self.last else None

    def summary(self) -> str:
        if self.interrupted:
            return f"interrupted at step {self.steps}: {self.run_dir / 'last.pt'} saved; rerun with --resume"
        best = (f", best val track acc (vote) {self.best_val_track_acc:.4f} at epoch {self.best_epoch} "
                f"-> {self.run_dir / 'best.pt'}") if self.best_val_track_acc is not None else ""
        if self.best_val_track_acc is None and self.last is not None and not self.last["val_tracks"]:
            best = ", no validation tracks: no accuracy, no best.pt"
        return f"done: {self.epochs} epochs, {self.steps} steps in {self.seconds:.1f} s{best}"


def train_step(model, optimizer, scaler, ctx, windows: torch.Tensor, labels: torch.Tensor):
    """One optimizer step on a whole batch of windows; returns the (detached) loss and logits."""
    with ctx:
        logits = model(windows)
        loss = F.cross_entropy(logits, labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), logits.detach()


def train(config: TrainConfig, on_step=None) -> TrainResult:
    """Train `config.model` on `config.shards`; records and checkpoints go to `config.out`.
    `on_step(step, epoch)` is called after every optimizer step (an exception from it stops the run as a
    crash would)."""
    if config.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = config.endpoint_url
    dist = init_distributed(config.device)
    try:
        return _train(config, dist, on_step)
    finally:
        dist.close()


def _train(config: TrainConfig, dist, on_step) -> TrainResult:
    started, device, main = time.perf_counter(), dist.device, dist.is_main
    # ---- data
    spec, val_spec = labelled_split(config.shards, "training"), labelled_split(config.shards, "validation")
    vocabulary = tuple(spec.vocabulary)
    window = config.window_spec(spec.sample_rate)
    check_clip_length(spec, window)
    run_dir = Path(config.out)
    # With one window per track, a tail batch of one track is a BatchNorm batch of one (which cannot
    # train): drop incomplete batches then (other tracks fill them in the next epoch's shuffle).
    loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, shuffle=True, seed=config.seed,
                                            shuffle_buffer=config.shuffle_buffer, num_workers=config.workers,
                                            equal_ranks=True, drop_last=config.windows == 1,
                                            on_error=config.on_error, read_threads=config.read_threads,
                                            check_crc=config.check_crc))
    val_loader = ShardLoader(val_spec, LoaderConfig(batch_size=config.batch_size, shuffle=False, equal_ranks=False,
                                                    num_workers=config.workers, on_error=config.on_error,
                                                    check_crc=config.check_crc,
                                                    read_threads=config.read_threads))
    bn_loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, shuffle=False, equal_ranks=False,
                                               on_error=config.on_error, check_crc=config.check_crc))
    check_before_writing(config, loader, window, device, dist.world_size)
    state = prepare_run_dir(config, run_dir, vocabulary, main)
    # ---- model, optimizer, precision
    torch.manual_seed(config.seed)
    raw_model = build_model(config.model, len(vocabulary), window.window).to(device)
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=config.lr)
    ctx, amp_dtype = autocast_context(device, config.amp, config.amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    epoch, step, batches_done, best, train_state, seconds_before = 0, 0, 0, None, None, 0.0
    if state is not None:
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        epoch, step, batches_done = state["epoch"], state["step"], state["batches_done"]
        best, seconds_before = state["best"], state["train_seconds"]
        train_state = state["train_totals"] if main else None   # global sums: one rank carries them
        try:
            loader.load_state_dict(state["loader"])
        except ValueError as exc:
            raise UserError(f"--resume: {run_dir / 'last.pt'}: {exc}") from None
        set_rng_state(state["rng"])
    eval_model = torch.compile(raw_model) if config.compile else raw_model
    model = eval_model
    if dist.is_distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    if main:
        write_json(run_dir / "config.json", {"train": config.as_dict(), "window": asdict(window),
                                             "vocabulary": list(vocabulary), "sample_rate": spec.sample_rate,
                                             "world_size": dist.world_size, "device": str(device),
                                             "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
                                             "parameters": count_parameters(raw_model), "torch": torch.__version__})

    def checkpoint(path: Path, train_sums: dict | None, seconds: float, record: dict | None = None) -> None:
        """Rank 0 writes.  `train_sums`: this epoch's train totals so far, summed over ranks (mid-epoch)."""
        if main:
            save_checkpoint(path, {
                "model_name": config.model, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "batches_done": batches_done,
                "loader": {**loader.state_dict(), "epoch": epoch, "batches": batches_done},
                "train_totals": train_sums, "train_seconds": seconds, "best": best, "metrics": record,
                "rng": rng_state(), "config": config.as_dict(), "vocabulary": list(vocabulary),
                "window": asdict(window), "sample_rate": spec.sample_rate})

    # ---- the loop
    progress = Progress(config, main)
    history, interrupted, first_step = [], False, step
    with stop_signals() as stop:
        while epoch < config.epochs and not (config.max_steps is not None and step >= config.max_steps):
            loader.set_epoch(epoch)
            num_batches = len(loader)
            totals = MetricTotals(len(vocabulary), device)
            if train_state is not None:
                totals.load(train_state)
            epoch_started, steps_before = time.perf_counter(), step
            feeder = DeviceFeeder(loader, device, window, seed=config.seed + dist.rank, epoch=epoch,
                                  start_index=batches_done)
            progress.start_epoch(epoch, config.epochs, num_batches, batches_done)
            for batch in feeder:
                if not batch.num_tracks:  # all its tracks were skipped (on_error=skip): nothing to learn
                    batches_done += 1
                    continue
                with compile_guard(config.compile and step == first_step):
                    loss, logits = train_step(model, optimizer, scaler, ctx, batch.windows, batch.labels)
                totals.add(logits, batch.labels, batch.num_tracks, loss)
                step, batches_done = step + 1, batches_done + 1
                if config.log_batches and main:
                    append_jsonl(run_dir / "steps.jsonl", {"step": step, "epoch": epoch + 1, "batch": batches_done,
                                                           "track_ids": batch.track_ids[::window.count].tolist()})
                progress.advance(loss, batch.windows.shape[0], batch.num_tracks)
                if on_step is not None:
                    on_step(step, epoch)
                if any_rank(stop.requested, device):
                    interrupted = True
                    break
                if config.max_steps is not None and step >= config.max_steps:
                    break
                if config.checkpoint_every and step % config.checkpoint_every == 0 and batches_done < num_batches:
                    checkpoint(run_dir / "last.pt", totals.reduced().state(),
                               seconds_before + time.perf_counter() - epoch_started)
            seconds = seconds_before + time.perf_counter() - epoch_started
            progress.end_epoch()
            if interrupted:
                checkpoint(run_dir / "last.pt", totals.reduced().state(), seconds)
                break
            complete = batches_done == num_batches
            steps_per_rank = all_gather_int(step - steps_before, device)
            skipped = int(all_reduce_sum(torch.tensor([loader.skipped_this_epoch], device=device)).item())
            totals = totals.reduced()
            trained = totals.result(skipped)
            val_started = time.perf_counter()
            recalibrate_batchnorm(eval_model, bn_loader, device, window, config.precise_bn, ctx)
            broadcast_buffers(eval_model)
            val_loader.label = f"validation after epoch {epoch + 1}"
            val = evaluate(eval_model, val_loader, device, window, ctx, len(vocabulary))
            record = {"epoch": epoch + 1, "step": step, "complete": complete,
                      "train_loss": trained.loss, "train_window_acc": trained.window_acc,
                      "val_loss": val.loss, "val_window_acc": val.window_acc,
                      "val_track_acc_vote": val.track_acc_vote, "val_track_acc_mean": val.track_acc_mean,
                      "val_tracks": val.tracks, "tracks_per_s": trained.tracks / seconds,
                      "windows_per_s": trained.windows / seconds, "seconds": seconds,
                      "val_seconds": time.perf_counter() - val_started, "skipped": skipped + val.skipped,
                      "steps_per_rank": steps_per_rank, "world_size": dist.world_size}
            history.append(record)
            improved = val.track_acc_vote is not None and (best is None or
                                                            val.track_acc_vote > best["val_track_acc_vote"])
            if improved:
                best = {"val_track_acc_vote": val.track_acc_vote, "epoch": epoch + 1, "step": step}
            if complete:
                epoch, batches_done, train_state, seconds_before = epoch + 1, 0, None, 0.0
            if main:
                append_jsonl(run_dir / "metrics.jsonl", record)
            progress.line(format_record(record, config.epochs))
            checkpoint(run_dir / "last.pt", None if complete else totals.state(), 0.0 if complete else seconds,
                       record)
            if improved and main:
                checkpoint(run_dir / "best.pt", None, 0.0, record)
            if not complete:  # max_steps reached mid-epoch
                break
    result = TrainResult(run_dir, epoch, step, time.perf_counter() - started, history,
                         best and best["val_track_acc_vote"], best and best["epoch"], interrupted)
    progress.line(result.summary())
    return result


def format_record(r: dict, epochs: int) -> str:
    part = "" if r["complete"] else " (partial)"
    return (f"epoch {r['epoch']}/{epochs}{part} step {r['step']} | train loss {fmt(r['train_loss'], 4)} "
            f"acc {fmt(r['train_window_acc'])} | val loss {fmt(r['val_loss'], 4)} acc {fmt(r['val_window_acc'])} "
            f"track vote {fmt(r['val_track_acc_vote'])} mean {fmt(r['val_track_acc_mean'])} | "
            f"{r['windows_per_s']:.1f} windows/s {r['tracks_per_s']:.2f} tracks/s | {r['seconds']:.1f} s"
            + (f" | {r['skipped']} skipped" if r["skipped"] else ""))


def check_before_writing(config: TrainConfig, loader: ShardLoader, window: WindowSpec, device, world: int) -> None:
    """What would stop the run later stops it now, before RUN_DIR is touched: a training split that
    gives no step, batch buffers that cannot fit in memory, a RUN_DIR that cannot be written."""
    if len(loader) == 0:
        n, workers = loader.spec.num_samples, config.workers
        per_rank = f" ({n // world} per rank)" if world > 1 else ""
        over = f" over --workers {workers}" if workers > 1 else ""
        dropped = " (with --windows 1 incomplete batches are dropped)" if loader.config.drop_last else ""
        raise UserError(f"{config.shards}: no training step can be taken: the training split's {n} tracks"
                        f"{per_rank} make no full batch of --batch-size {config.batch_size}{over}{dropped}; "
                        f"lower --batch-size{' or --workers' if over else ''}"
                        + (" or use --windows 2 or more" if dropped else ""))
    rows = min(config.batch_size, loader.spec.num_samples)
    windows = 2 * rows * window.count * window.window * 4 if device.type == "cpu" else 0  # float32, recycled
    check_memory(loader.spec, loader.config, world, extra=windows)
    writable_folder(config.out, "--out")
