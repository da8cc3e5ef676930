"""The optimizer and the learning-rate schedule of a training run, each chosen by name from a registry.

    optimizer = build_optimizer("adamw", model, lr=1e-3, weight_decay=None)   # OPTIMIZERS
    schedule = Schedule("cosine", lr=1e-3, total_steps=400, warmup=0.05)      # SCHEDULES
    schedule.apply(optimizer, step)      # before optimizer step `step` (0-based, counted over the whole run)

The schedule is a pure function of the global step and the run's total steps: the loop sets each step's
learning rate from the step alone, so a resumed run (which restores the step) follows the same curve
exactly, with no scheduler state to save.  Weight decay is never applied to BatchNorm weights or biases
(any parameter of one dimension or less): `parameter_groups`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

DEFAULT_WEIGHT_DECAY = 0.05      # adamw's decoupled decay (adam: 0, the notebook's plain Adam)
ONECYCLE_DIV = 25.0              # onecycle starts at lr / 25 ...
ONECYCLE_FINAL_DIV = 1e4         # ... and ends at lr / 25 / 1e4 (torch.optim.lr_scheduler.OneCycleLR's defaults)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: the weights of convolutions and linear layers (decayed), and every parameter of one
    dimension or less (BatchNorm weights, biases: not decayed: decaying them only fights the norms)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _fusable(model) -> bool:
    """Fused Adam/AdamW (one kernel per step; CPU and CUDA, float parameters): the step the non-finite guard
    skips on the device (fmashard.train.guard.step_unless)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())


def _adamw(model, lr: float, weight_decay: float | None) -> torch.optim.Optimizer:
    decay = DEFAULT_WEIGHT_DECAY if weight_decay is None else weight_decay
    return torch.optim.AdamW(parameter_groups(model, decay), lr=lr, fused=_fusable(model))


def _adam(model, lr: float, weight_decay: float | None) -> torch.optim.Optimizer:
    """Plain Adam (the notebook's); an explicit weight decay is Adam's L2 penalty, on the same groups."""
    return torch.optim.Adam(parameter_groups(model, weight_decay or 0.0), lr=lr, fused=_fusable(model))


# name -> (model, lr, weight_decay or None for the optimizer's default) -> optimizer
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adamw": _adamw, "adam": _adam}


def build_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float | None = None):
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, lr, weight_decay)


# ------------------------------------------------------------------------------------------ schedules
def _constant(step: int, total: int, warmup: int) -> float:
    return 1.0


def _cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to the peak over the first `warmup` steps (step 0 at 1/warmup of it, step
    warmup - 1 at the peak), then a half cosine from the peak to 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _cos_between(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _onecycle(step: int, total: int, warmup: int) -> float:
    """torch's OneCycleLR (two phases, cosine, pct_start = warmup / total): from 1/25 of the peak up to it
    at step warmup - 1 by a half cosine, then down to 1/25/1e4 of it at the last step (total - 1)."""
    low, final = 1.0 / ONECYCLE_DIV, 1.0 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    peak_step, last_step = warmup - 1, total - 1
    if warmup >= 2 and step <= peak_step:
        return _cos_between(low, 1.0, step / peak_step)
    start = max(0, peak_step)
    pct = min(1.0, (step - start) / max(1, last_step - start))
    return _cos_between(1.0, final, pct)


# name -> (step, total steps, warm-up steps) -> the factor of the peak learning rate at `step`
SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"cosine": _cosine, "onecycle": _onecycle,
                                                          "none": _constant}


def warmup_steps(warmup: float, total_steps: int) -> int:
    """`warmup` in [0, 1): that fraction of the run's steps (rounded, at least 1 when > 0); >= 1: steps."""
    if warmup >= 1:
        return int(warmup)
    return max(1, round(warmup * total_steps)) if warmup > 0 else 0


class Schedule:
    """The learning rate of every step of a run of `total_steps` optimizer steps, peaking at `lr`."""

    def __init__(self, name: str, lr: float, total_steps: int, warmup: float = 0.05):
        if name not in SCHEDULES:
            raise ValueError(f"lr_schedule: unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
        self.name, self.lr, self.total_steps = name, float(lr), max(1, int(total_steps))
        self.warmup = min(warmup_steps(warmup, self.total_steps), self.total_steps)
        self.factor = SCHEDULES[name]

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based over the whole run; past the end: the end's)."""
        return self.lr * self.factor(min(step, self.total_steps - 1), self.total_steps, self.warmup)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's learning rate for step `step` (a Python float: no device work)."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state(self) -> dict:
        """What checkpoints record of it (a resume recomputes the schedule from the config and the step)."""
        if self.name == "none":   # a constant rate: the run's length does not matter (--epochs may grow)
            return {"name": self.name, "lr": self.lr}
        return {"name": self.name, "lr": self.lr, "total_steps": self.total_steps, "warmup_steps": self.warmup}

    def __repr__(self) -> str:
        return f"Schedule({self.name!r}, lr={self.lr:g}, total_steps={self.total_steps}, warmup={self.warmup})"
