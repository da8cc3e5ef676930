"""The data of a training run (fmashard.train.loop): what stays fixed over it (`Run`), what its steps change
(`TrainState`, all of it kept in last.pt), one epoch's pass (`Epoch`) and what `train` returns (`TrainResult`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmashard.data.loader import ShardLoader
from fmashard.data.windows import WindowSpec
from fmashard.format.spec import DatasetSpec
from fmashard.train.config import TrainConfig
from fmashard.train.display import Progress
from fmashard.train.distributed import DistContext
from fmashard.train.guard import NonFiniteGuard
from fmashard.train.metrics import MetricTotals
from fmashard.train.optim import Schedule


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
    best_score: float | None = None  # best.pt's score under checkpoint.BEST_RULE
    nonfinite_steps: int = 0         # steps skipped by the non-finite guard (fmashard.train.guard), whole run

    @property
    def last(self) -> dict | None:
        return self.history[-1] if self.history else None

    @property
    def val_track_acc(self) -> float | None:
        return self.last["val_track_acc_vote"] if self.last else None

    def summary(self) -> str:
        if self.interrupted:
            return f"interrupted at step {self.steps}: {self.run_dir / 'last.pt'} saved; rerun with --resume"
        best = (f", best.pt: epoch {self.best_epoch} (val track acc mean-logits, last-3 mean {self.best_score:.4f}; "
                f"vote {self.best_val_track_acc:.4f}) -> {self.run_dir / 'best.pt'}") if self.best_epoch else ""
        if self.best_epoch is None and self.last is not None and not self.last["val_tracks"]:
            best = ", no validation tracks: no accuracy, no best.pt"
        skipped = f", {self.nonfinite_steps} non-finite steps skipped" if self.nonfinite_steps else ""
        return f"done: {self.epochs} epochs, {self.steps} steps in {self.seconds:.1f} s{skipped}{best}"


@dataclass
class Run:
    """What stays fixed over a run: its settings, data, folder and display."""
    config: TrainConfig
    dist: DistContext
    run_dir: Path
    spec: DatasetSpec
    window: WindowSpec
    transforms: list             # the device transforms of training batches (validation: none)
    features: torch.nn.Module    # what the model takes, from the windows (fmashard.data.features), every split
    loader: ShardLoader          # training batches, shuffled
    val_loader: ShardLoader      # validation batches, in order
    bn_loader: ShardLoader       # training batches in order, for --precise-bn
    schedule: Schedule           # the learning rate of every step (over epochs * batches per epoch)
    progress: Progress

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(self.spec.vocabulary)

    def at_max_steps(self, step: int) -> bool:
        return self.config.max_steps is not None and step >= self.config.max_steps


@dataclass
class TrainState:
    """What the steps change; last.pt keeps all of it (`save`) and a resume restores it (`resume`)."""
    model: torch.nn.Module             # the weights saved (not compiled, not DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ctx: object                        # the run's autocast context (nullcontext without --amp)
    amp_dtype: torch.dtype | None
    epoch: int = 0                     # the epoch being trained (0-based)
    step: int = 0                      # optimizer steps over the whole run
    batches_done: int = 0              # batches of `epoch` already trained (a resume starts after them)
    best: dict | None = None           # best.pt's entry (checkpoint.best_candidate: score, val_loss, epoch, ...)
    recent: list = field(default_factory=list)   # BEST_METRIC of the complete epochs so far (the last 3 kept)
    train_totals: dict | None = None   # resumed mid-epoch: the epoch's sums so far (over ranks, on rank 0)
    train_seconds: float = 0.0         # resumed mid-epoch: the epoch's training seconds so far
    eval_model: torch.nn.Module | None = None   # the model, compiled with --compile
    step_model: torch.nn.Module | None = None   # eval_model, DDP-wrapped under torchrun
    first_step: int = 0                # the step this call started at (torch.compile compiles on it)
    guard: NonFiniteGuard | None = None  # skips and counts non-finite steps (fmashard.train.guard)
    nonfinite_seen: int = 0            # the guard's total at the end of the last complete epoch


@dataclass
class Epoch:
    """One pass of `train_epoch`: this rank's totals and steps, and how it ended."""
    totals: MetricTotals
    seconds: float                     # training seconds of the epoch (before a resume too)
    steps: int                         # optimizer steps this rank took in it
    complete: bool                     # every batch of the epoch trained
    interrupted: bool                  # a stop was requested (SIGTERM / Ctrl-C)
