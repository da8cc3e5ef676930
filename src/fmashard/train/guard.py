"""The non-finite guard: a training step whose loss or gradients are not finite changes nothing.

GradScaler skips an fp16 step whose scaled gradients overflowed; this does the same for every precision
(fp32, bf16, fp16) and device, and counts what it skips:

    guard = NonFiniteGuard(model, limit=10)
    guard.before_step()                       # keep the buffers (BatchNorm statistics) the forward pass moves
    loss = ...; scaler.scale(loss).backward()
    guard.step(optimizer, scaler, loss)       # the optimizer steps unless the loss or a gradient is not finite
    counts = guard.poll()                     # (skipped in all, skipped in a row) once it reached the host

Nothing here waits for the device.  The verdict is a device tensor: the total gradient norm
(`torch.nn.utils.get_total_norm`, one foreach pass) and the loss must be finite.  The optimizers are
built fused (fmashard.train.optim), and a fused Adam/AdamW takes GradScaler's `found_inf` tensor and skips
the update on the device, its step count included; an optimizer without a fused step falls back to one
host read per step.  The forward pass of a skipped step has already moved the BatchNorm running
statistics (with NaN, often): they are put back from a copy, again on the device.  The counts stay on the
device and reach the host through a non-blocking copy into pinned memory that `poll` reads once it has
arrived (on a CPU at once), so the limit of consecutive skips is seen a step or two late on a GPU, never
by waiting.  Under DDP the gradients are all-reduced before the check, so every rank reaches the same
verdict; a non-finite loss on one rank makes every rank's gradients non-finite.
"""
from __future__ import annotations

import math

import torch

from fmashard.errors import UserError

NONFINITE_LIMIT = 10   # consecutive skipped steps before training stops (fp16's GradScaler halves its scale on
                       # each: 10 in a row is a scale 1024 times smaller, far past its usual few at the start)
REMEDIES = ("a lower --lr, fp32 (no --amp), --amp-dtype bf16 instead of fp16, or --check-crc to rule out "
            "corrupt audio")


class NonFiniteStop(UserError):
    """Training stopped: too many consecutive steps had a non-finite loss or gradients."""


class NonFiniteGuard:
    """One training run's verdicts and counts (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, limit: int = NONFINITE_LIMIT, skipped: int = 0):
        self.limit = limit
        self.buffers = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]
        device = next(model.parameters()).device
        self.cuda = device.type == "cuda"
        self.counts = torch.tensor([float(skipped), 0.0], dtype=torch.float64, device=device)  # total, in a row
        self.host = torch.empty(2, dtype=torch.float64, pin_memory=self.cuda)
        self.host_counts = (int(skipped), 0)   # the latest counts that have reached the host
        self.event = None                      # the CUDA event of the copy in flight

    def before_step(self) -> None:
        for saved, buffer in zip(self.saved, self.buffers):
            saved.copy_(buffer)

    def step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> torch.Tensor:
        """After `scaler.scale(loss).backward()`: step `optimizer` unless the loss or a gradient is not finite,
        update the scaler, clear the gradients.  Returns the verdict (1.0: skipped), on the device."""
        scaler.unscale_(optimizer)   # fp16: the true gradients (a no-op for fp32 and bf16)
        found = non_finite(loss, gradients(optimizer))
        step_unless(optimizer, found)
        scaler.update()              # fp16: the scale falls after an overflow (its found-inf flag is ours too)
        optimizer.zero_grad(set_to_none=True)
        skip = found.bool()
        for saved, buffer in zip(self.saved, self.buffers):
            buffer.copy_(torch.where(skip, saved, buffer))
        self.counts[0].add_(found)
        self.counts[1].add_(found).mul_(found)   # +1 on a skip, back to 0 on a step
        return found

    def poll(self) -> tuple[int, int]:
        """(steps skipped in all, in a row up to the latest step whose counts reached the host); never waits."""
        if self.cuda:
            if self.event is not None and self.event.query():
                self.host_counts = _counts(self.host)
                self.event = None
            if self.event is None:
                self.host.copy_(self.counts, non_blocking=True)
                self.event = torch.cuda.Event()
                self.event.record()
            return self.host_counts
        self.host.copy_(self.counts)
        self.host_counts = _counts(self.host)
        return self.host_counts

    def read(self) -> tuple[int, int]:
        """The counts now (waits for the device: for an epoch's end or a stop, not per step)."""
        self.host_counts = _counts(self.counts.cpu())
        return self.host_counts

    def tripped(self) -> bool:
        """The latest counts on the host reached the limit of skips in a row."""
        return self.host_counts[1] >= self.limit


def _counts(host: torch.Tensor) -> tuple[int, int]:
    total, in_a_row = host.numpy().tolist()   # host memory: no device read
    return int(total), int(in_a_row)


def gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def non_finite(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when the loss or any gradient is not finite, else 0.0: a float32 scalar on the loss's device.
    (A total gradient norm that overflows float32 counts too: gradients near 1e19 are no step to take.)"""
    bad = ~torch.isfinite(loss.detach().float())
    if grads:
        bad = bad | ~torch.isfinite(torch.nn.utils.get_total_norm(grads))   # the same device as the loss
    return bad.float()


def fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` skips a step on the device given GradScaler's `found_inf` tensor."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


def step_unless(optimizer: torch.optim.Optimizer, found: torch.Tensor) -> None:
    """`optimizer.step()` unless `found` (a device scalar) is non-zero; without a host read when fused."""
    if fused(optimizer):
        optimizer.grad_scale, optimizer.found_inf = None, found   # GradScaler's protocol for fused optimizers
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not found.item():   # e.g. a last.pt of an unfused optimizer: one host read per step
        optimizer.step()


def stop_message(step: int, epoch: int, epochs: int, in_a_row: int, what: str, lr: float) -> str:
    """The one line of a NonFiniteStop; `what`: "model soundnet, bf16 autocast, device cpu"."""
    return (f"training stopped at step {step} (epoch {epoch}/{epochs}): {in_a_row} steps in a row had a non-finite "
            f"loss or gradients and were skipped ({what}); the weights are those before them, the run folder "
            f"keeps its last.pt; likely remedies: {REMEDIES.replace('a lower --lr', f'a lower --lr (now {lr:g})')}")


def non_finite_tensors(state: dict) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    return [name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def describe_run(model: str, amp_dtype: torch.dtype | None, scaled: bool, device: torch.device) -> str:
    """What a non-finite stop names: "model soundnet, bf16 autocast, device cpu"."""
    if amp_dtype is None:
        return f"model {model}, fp32, device {device}"
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, str(amp_dtype))
    return f"model {model}, {name} autocast{' with GradScaler' if scaled else ''}, device {device}"


def check_finite_state(state: dict, when: str, what: str, lr: float) -> None:
    """NonFiniteStop when a model's state dict holds a NaN or an infinity."""
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteStop(f"{when} with non-finite weights ({len(bad)} tensors, e.g. {bad[0]!r}; {what}); its "
                            f"checkpoints past the last best.pt are unusable; likely remedy: a lower --lr "
                            f"(now {lr:g})")
