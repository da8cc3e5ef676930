"""Training: `train(TrainConfig(...)) -> TrainResult`, one short loop over a `TrainState`.

    shards --ShardLoader--> host batches of B tracks --DeviceFeeder(transforms)--> (B*W, 1, L) windows on
    the device --> ONE optimizer step per batch (all W windows of all B tracks) --> after each epoch:
    validation (loss, window accuracy, track accuracy by vote and by mean logits), metrics.jsonl, last.pt,
    best.pt (`checkpoint.BEST_RULE`).

The optimizer and the learning rate of each step come from `fmashard.train.optim` (default: AdamW, linear
warm-up then cosine over the run's `epochs * batches per epoch` steps); the rate is set from the global step
before every step, so a resumed run follows the same curve.

Precision follows nanoGPT (`fmashard.train.precision`): one `ctx` and `GradScaler(enabled=fp16)`.  Under
`torchrun` the same loop runs DDP (see distributed.py).  `--resume` continues from last.pt exactly: the
loader state gives the remaining samples in the same order, and the DeviceFeeder's start_index keeps the
random crops of the remaining batches.

Every step goes through the non-finite guard (`fmashard.train.guard`): a step whose loss or gradients
are not finite changes neither the weights nor the optimizer state, is counted (the epoch's line,
metrics.jsonl, the summary), and `max_nonfinite_steps` of them in a row stop the run with one line
(NonFiniteStop), all without a host read per step.  best.pt never comes from an epoch whose validation
loss is not finite, and a run whose weights are not finite at its end does not say "done".
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import torch

from fmashard import storage
from fmashard.data.device import DeviceFeeder
from fmashard.data.features import make_features
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.targets import soft_cross_entropy
from fmashard.errors import UserError
from fmashard.models import build_model, count_parameters
from fmashard.train.checkpoint import rng_state, save_checkpoint, select_best, set_rng_state, window_record
from fmashard.train.config import TrainConfig
from fmashard.train.display import Progress, compile_guard, format_record, stop_signals
from fmashard.train.distributed import (
    DistContext,
    all_gather_int,
    all_reduce_sum,
    broadcast_buffers,
    init_distributed,
    stop_requested,
)
from fmashard.train.evaluate import evaluate, recalibrate_batchnorm
from fmashard.train.guard import NonFiniteGuard, NonFiniteStop, check_finite_state, describe_run, stop_message
from fmashard.train.metrics import MetricTotals
from fmashard.train.optim import Schedule, build_optimizer
from fmashard.train.precision import autocast_context
from fmashard.train.preflight import check_before_writing, check_clip_length, labelled_split, validation_split
from fmashard.train.run_dir import append_jsonl, prepare_run_dir, write_json
from fmashard.train.state import Epoch, Run, TrainResult, TrainState


def train_step(model, optimizer, scaler, ctx, windows: torch.Tensor, labels: torch.Tensor, mix=None,
               guard: NonFiniteGuard | None = None):
    """One optimizer step on a whole batch of windows, skipped by `guard` (one made for this step if None)
    when the loss or a gradient is not finite; returns the (detached) loss and logits.  `mix` (after
    Mixup): the soft targets, so the loss is the mixed cross-entropy (fmashard.data.targets)."""
    guard = guard if guard is not None else NonFiniteGuard(model)
    guard.before_step()
    with ctx:
        logits = model(windows)
        loss = soft_cross_entropy(logits, labels, mix)
    scaler.scale(loss).backward()
    guard.step(optimizer, scaler, loss)
    return loss.detach(), logits.detach()


def train(config: TrainConfig, on_step=None) -> TrainResult:
    """Train `config.model` on `config.shards`; records and checkpoints go to `config.out`.
    `on_step(step, epoch)` is called after every optimizer step (an exception from it stops the run as a
    crash would)."""
    storage.set_endpoint_url(config.endpoint_url)
    dist = init_distributed(config.device)
    try:
        return _train(config, dist, on_step)
    finally:
        dist.close()


def _train(config: TrainConfig, dist: DistContext, on_step) -> TrainResult:
    started = time.perf_counter()
    run, resumed = prepare(config, dist)
    state = start_state(run, resumed)
    history, interrupted = [], False
    with stop_signals() as stop:
        while state.epoch < config.epochs and not run.at_max_steps(state.step):
            epoch = train_epoch(run, state, stop, on_step)
            if epoch.interrupted:
                save(run, state, "last.pt", epoch.totals.reduced().state(), epoch.seconds)
                interrupted = True
                break
            record = validate(run, state, epoch)
            history.append(record)
            end_epoch(run, state, epoch, record)
            if not epoch.complete:  # max_steps reached mid-epoch
                break
    check_finite_weights(run, state)
    best = state.best or {}
    result = TrainResult(run.run_dir, state.epoch, state.step, time.perf_counter() - started, history,
                         best.get("val_track_acc_vote"), best.get("epoch"), interrupted, best.get("score"),
                         state.guard.read()[0])
    run.progress.line(result.summary())
    return result


def prepare(config: TrainConfig, dist: DistContext) -> tuple[Run, dict | None]:
    """The run's data and checks, then its folder; the last.pt state to resume from (or None)."""
    spec = labelled_split(config.shards, "training")
    val_spec = validation_split(config.shards, spec, announce=dist.is_main)   # a build without one: empty
    window, transforms = config.window_spec(spec.sample_rate), config.transforms()
    check_clip_length(spec, window, transforms)
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
    check_before_writing(config, loader, window, dist.device, dist.world_size)
    run_dir = Path(config.out)
    resumed = prepare_run_dir(config, run_dir, tuple(spec.vocabulary), dist.is_main)
    features = make_features(config.features, spec.sample_rate)
    # the schedule spans the run's epochs (len at epoch 0: the same on every resume); max_steps only stops it
    schedule = Schedule(config.lr_schedule, config.lr, config.epochs * len(loader), config.warmup)
    run = Run(config, dist, run_dir, spec, window, transforms, features, loader, val_loader, bn_loader, schedule,
              Progress(config, dist.is_main))
    return run, resumed


def start_state(run: Run, resumed: dict | None) -> TrainState:
    """Model, optimizer and precision, seeded; restored from `resumed` (a last.pt) when given.  Rank 0
    writes config.json."""
    config, device = run.config, run.dist.device
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(run.vocabulary), run.window.window).to(device)
    optimizer = build_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    ctx, amp_dtype = autocast_context(device, config.amp, config.amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = TrainState(model, optimizer, scaler, ctx, amp_dtype)
    if resumed is not None:
        resume(run, state, resumed)
    state.guard = NonFiniteGuard(model, config.max_nonfinite_steps, skipped=state.nonfinite_seen)
    state.first_step = state.step
    state.eval_model = state.step_model = torch.compile(model) if config.compile else model
    if run.dist.is_distributed:
        state.step_model = torch.nn.parallel.DistributedDataParallel(
            state.eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.dist.is_main:
        write_json(run.run_dir / "config.json", {
            "train": config.as_dict(), "window": window_record(run.window, run.transforms),
            "vocabulary": list(run.vocabulary), "sample_rate": run.spec.sample_rate,
            "world_size": run.dist.world_size, "device": str(device),
            "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
            "parameters": count_parameters(model), "torch": torch.__version__})
    return state


def resume(run: Run, state: TrainState, saved: dict) -> None:
    """Restore `state`, the loader position and the RNG states from a last.pt."""
    recorded = saved.get("schedule")
    if recorded is not None and recorded != run.schedule.state():
        raise UserError(f"--resume: {run.run_dir / 'last.pt'} was trained on the schedule {recorded}, not "
                        f"{run.schedule.state()}: resume with the same --epochs, --lr, --lr-schedule and --warmup")
    state.model.load_state_dict(saved["model"])
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
    except ValueError as exc:   # another optimizer's parameter groups (an older fmashard's last.pt)
        raise UserError(f"--resume: {run.run_dir / 'last.pt'}: its optimizer state does not fit --optimizer "
                        f"{run.config.optimizer} ({exc})") from None
    state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step, state.batches_done = saved["epoch"], saved["step"], saved["batches_done"]
    state.best, state.train_seconds = saved["best"], saved["train_seconds"]
    state.recent = list(saved.get("recent", []))
    state.nonfinite_seen = int(saved.get("nonfinite_steps", 0))
    state.train_totals = saved["train_totals"] if run.dist.is_main else None   # global sums: one rank carries them
    try:
        run.loader.load_state_dict(saved["loader"])
    except ValueError as exc:
        raise UserError(f"--resume: {run.run_dir / 'last.pt'}: {exc}") from None
    set_rng_state(saved["rng"])


def with_track_ids(host_batches, pending: deque):
    """The host batches, each one's track ids (host memory) appended to `pending` as it passes: the
    DeviceFeeder runs one batch ahead, so `pending[0]` is always the device batch it yields next."""
    for batch in host_batches:
        pending.append(batch.track_ids)
        yield batch
        del batch   # hold no buffer while the loader recycles them


def train_epoch(run: Run, state: TrainState, stop, on_step) -> Epoch:
    """Train the rest of epoch `state.epoch` (from batch `state.batches_done`): one step per batch, last.pt
    every `checkpoint_every` steps; stops early at max_steps or when a stop is requested.

    The steady state never waits for the device: the metrics stay on it (MetricTotals), the bar's loss is
    copied behind the step (display.LossReadout), --log-batches takes the track ids from the host batch,
    and under DDP the ranks agree on a stop on the host every STOP_CHECK_EVERY steps.  Only the mid-epoch
    last.pt (every `checkpoint_every` steps) reads the device (tests/test_loop_syncs.py)."""
    config, device, loader = run.config, run.dist.device, run.loader
    loader.set_epoch(state.epoch)
    num_batches, steps_before = len(loader), state.step
    totals = MetricTotals(len(run.vocabulary), device)
    if state.train_totals is not None:
        totals.load(state.train_totals)
    started = time.perf_counter()
    track_ids = deque() if config.log_batches else None
    host_batches = with_track_ids(loader, track_ids) if track_ids is not None else loader
    feeder = DeviceFeeder(host_batches, device, run.window, seed=config.seed + run.dist.rank, epoch=state.epoch,
                          start_index=state.batches_done, transforms=run.transforms, features=run.features)
    run.progress.start_epoch(state.epoch, config.epochs, num_batches, state.batches_done)
    interrupted = False
    for batch in feeder:
        ids = track_ids.popleft() if track_ids is not None else None
        if not batch.num_tracks:  # all its tracks were skipped (on_error=skip): nothing to learn
            state.batches_done += 1
            continue
        run.schedule.apply(state.optimizer, state.step)   # this step's rate, from the global step alone
        with compile_guard(config.compile and state.step == state.first_step):
            loss, logits = train_step(state.step_model, state.optimizer, state.scaler, state.ctx, batch.windows,
                                      batch.labels, batch.mix, state.guard)
        totals.add(logits, batch.labels, batch.num_tracks, loss)
        state.step, state.batches_done = state.step + 1, state.batches_done + 1
        if ids is not None and run.dist.is_main:
            append_jsonl(run.run_dir / "steps.jsonl", {"step": state.step, "epoch": state.epoch + 1,
                                                       "batch": state.batches_done, "track_ids": ids.numpy().tolist()})
        run.progress.advance(loss, batch.windows.shape[0], batch.num_tracks)
        if on_step is not None:
            on_step(state.step, state.epoch)
        state.guard.poll()
        if stop_requested(stop.requested or state.guard.tripped(), state.step):
            check_nonfinite(run, state)
            interrupted = True
            break
        if run.at_max_steps(state.step):
            break
        if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.batches_done < num_batches:
            save(run, state, "last.pt", totals.reduced().state(),
                 state.train_seconds + time.perf_counter() - started)
    seconds = state.train_seconds + time.perf_counter() - started
    run.progress.end_epoch()
    return Epoch(totals, seconds, state.step - steps_before, state.batches_done == num_batches, interrupted)


def validate(run: Run, state: TrainState, epoch: Epoch) -> dict:
    """Sum the epoch's training totals over ranks (`epoch.totals` becomes the sums), evaluate on the
    validation split; the epoch's metrics.jsonl record."""
    device = run.dist.device
    steps_per_rank = all_gather_int(epoch.steps, device)
    skipped = int(all_reduce_sum(torch.tensor([run.loader.skipped_this_epoch], device=device)).item())
    epoch.totals = epoch.totals.reduced()
    trained = epoch.totals.result(skipped)
    nonfinite = state.guard.read()[0]
    val_started = time.perf_counter()
    recalibrate_batchnorm(state.eval_model, run.bn_loader, device, run.window, run.config.precise_bn, state.ctx,
                          run.features)
    broadcast_buffers(state.eval_model)
    run.val_loader.label = f"validation after epoch {state.epoch + 1}"
    val = evaluate(state.eval_model, run.val_loader, device, run.window, state.ctx, len(run.vocabulary),
                   run.features)
    return {"epoch": state.epoch + 1, "step": state.step, "complete": epoch.complete,
            "train_loss": trained.loss, "train_window_acc": trained.window_acc,
            "val_loss": val.loss, "val_window_acc": val.window_acc,
            "val_track_acc_vote": val.track_acc_vote, "val_track_acc_mean": val.track_acc_mean,
            "val_clip_acc_vote": val.clip_acc_vote, "val_tracks": val.tracks, "val_clips": val.clips,
            "tracks_per_s": trained.tracks / epoch.seconds,   # records (clips) per second
            "windows_per_s": trained.windows / epoch.seconds, "seconds": epoch.seconds,
            "val_seconds": time.perf_counter() - val_started, "skipped": skipped + val.skipped,
            "steps_per_rank": steps_per_rank, "world_size": run.dist.world_size,
            "nonfinite_steps": nonfinite - state.nonfinite_seen, "nonfinite_steps_total": nonfinite}


def end_epoch(run: Run, state: TrainState, epoch: Epoch, record: dict) -> None:
    """Keep the best (checkpoint.BEST_RULE); move on to the next epoch if this one is complete; metrics.jsonl,
    last.pt, best.pt."""
    state.best, state.recent, improved = select_best(state.best, state.recent, record, epoch.complete)
    if epoch.complete:
        state.epoch, state.batches_done, state.train_totals, state.train_seconds = state.epoch + 1, 0, None, 0.0
        state.nonfinite_seen = record["nonfinite_steps_total"]
    if run.dist.is_main:
        append_jsonl(run.run_dir / "metrics.jsonl", record)
    run.progress.line(format_record(record, run.config.epochs))
    save(run, state, "last.pt", None if epoch.complete else epoch.totals.state(),
         0.0 if epoch.complete else epoch.seconds, record)
    if improved:
        save(run, state, "best.pt", None, 0.0, record)


def save(run: Run, state: TrainState, name: str, train_totals: dict | None, train_seconds: float,
         record: dict | None = None) -> None:
    """Rank 0 writes RUN_DIR/`name`: everything a resume needs.  `train_totals`, `train_seconds`: the
    current epoch's sums over ranks and training time so far (mid-epoch; None and 0 at an epoch's end)."""
    if not run.dist.is_main:
        return
    config = run.config
    save_checkpoint(run.run_dir / name, {
        "model_name": config.model, "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(), "epoch": state.epoch, "step": state.step,
        "batches_done": state.batches_done,
        "loader": {**run.loader.state_dict(), "epoch": state.epoch, "batches": state.batches_done},
        "train_totals": train_totals, "train_seconds": train_seconds, "best": state.best, "metrics": record,
        "recent": state.recent, "nonfinite_steps": state.nonfinite_seen, "schedule": run.schedule.state(),
        "lr": run.schedule.lr_at(max(0, state.step - 1)),
        "rng": rng_state(), "config": config.as_dict(), "vocabulary": list(run.vocabulary),
        "window": window_record(run.window, run.transforms), "sample_rate": run.spec.sample_rate})


def describe(run: Run, state: TrainState) -> str:
    return describe_run(run.config.model, state.amp_dtype, state.scaler.is_enabled(), run.dist.device)


def check_nonfinite(run: Run, state: TrainState) -> None:
    """At an agreed stop: NonFiniteStop when the guard's limit of skips in a row was reached (on every rank:
    their gradients, so their counts, are the same)."""
    _, in_a_row = state.guard.read()
    if in_a_row >= state.guard.limit:
        raise NonFiniteStop(stop_message(state.step, state.epoch + 1, run.config.epochs, in_a_row,
                                         describe(run, state), run.config.lr))


def check_finite_weights(run: Run, state: TrainState) -> None:
    """A run never ends in "done" over weights (or BatchNorm statistics) that are not finite."""
    check_finite_state(state.model.state_dict(), f"training ended at step {state.step}", describe(run, state),
                       run.config.lr)
