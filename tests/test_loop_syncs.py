"""The training loop's steady state never waits for the device (issue 17).

On a CPU nothing can be a CUDA synchronisation, so the CPU test counts what would be one on a GPU: every
read of a tensor's value on the host (`.item()`, `.tolist()`, `.cpu()`, `bool()`, `float()`,
`int()`, `format()`) and every blocking `torch.tensor(..., device=)` / `.to(device)` copy, made by
fmashard's own code on the training thread, during a short real run on real (synthetic-audio) tar shards.
It cannot see a read made inside a torch C++ kernel (a boolean mask, `nonzero`): the CUDA test, which runs
the same loop under `torch.cuda.set_sync_debug_mode("error")`, does.
"""
from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

import fmashard
from fmashard.train import TrainConfig, train
from test_checkpoint import TINY, write_run_shards

SRC = Path(fmashard.__file__).resolve().parent
TORCH = Path(torch.__file__).resolve().parent
# Tensor methods that hand a value to Python (on CUDA: copy it back and wait for the device); `.numpy()`
# is not one: it refuses a CUDA tensor, so it only ever reads host memory (the loader's batch buffers).
READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")
# torch's own Python shims of Tensor methods: seen through, so `f"{t:.4f}"` counts for its caller.
SHIMS = (TORCH / "_tensor.py", TORCH / "_tensor_str.py", TORCH / "overrides.py")
WARM_UP_STEPS = 2   # the first steps allocate, build the bar, start the read threads


class HostReads:
    """Counts, per optimizer step, the host reads and blocking copies whose caller is fmashard's code on
    the main thread (a torch-internal read, such as Adam's CPU step counter, is torch's own business)."""

    def __init__(self, monkeypatch):
        self.step, self.events = 0, []   # (step, "read item", "train/display.py:98 advance")
        self.main = threading.main_thread()
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), f"read {name}"))
        monkeypatch.setattr(torch.Tensor, "to", self._wrap(torch.Tensor.to, "copy .to", blocking_copy))
        for name in ("tensor", "as_tensor"):
            monkeypatch.setattr(torch, name, self._wrap(getattr(torch, name), f"copy torch.{name}", with_device))

    def _site(self) -> str | None:
        frame = sys._getframe(2)
        while frame is not None and Path(frame.f_code.co_filename).resolve() in SHIMS:
            frame = frame.f_back
        if frame is None:
            return None
        path = Path(frame.f_code.co_filename).resolve()
        if not path.is_relative_to(SRC):
            return None
        return f"{path.relative_to(SRC)}:{frame.f_lineno} {frame.f_code.co_name}"

    def _wrap(self, original, kind: str, applies=lambda args, kwargs: True):
        def counted(*args, **kwargs):
            if threading.current_thread() is self.main and applies(args, kwargs):
                site = self._site()
                if site is not None:
                    self.events.append((self.step, kind, site))
            return original(*args, **kwargs)
        return counted

    def on_step(self, step: int, epoch: int) -> None:
        self.step = step   # what follows (until the next call) is the work of step + 1

    def per_step(self, first: int, last: int) -> dict[int, list[str]]:
        """{step: [what it read]} for steps first..last (a step's work: fetching its batch, the step,
        metrics, bar, stop check, up to its on_step)."""
        out = {s: [] for s in range(first, last + 1)}
        for step, kind, site in self.events:
            if first <= step + 1 <= last:
                out[step + 1].append(f"{kind} at {site}")
        return out


def blocking_copy(args, kwargs) -> bool:
    """`.to(...)` with a device and without non_blocking=True (a dtype-only `.to` copies nothing across)."""
    targets = list(args[1:]) + [kwargs.get("device")]
    has_device = any(isinstance(a, (torch.device, str)) for a in targets if a is not None)
    return has_device and not kwargs.get("non_blocking", len(args) > 3 and args[3])


def with_device(args, kwargs) -> bool:
    return kwargs.get("device") is not None


@pytest.fixture
def shards(tmp_path):
    # 24 training tracks in 1-3-track shards: 12 steps of 2 tracks, shard boundaries inside the epoch
    return write_run_shards(tmp_path / "shards", {"training": [3, 2, 3, 1, 3, 2, 3, 1, 3, 3], "validation": [2]})


STEPS = 8   # 2 warm-up steps, then 6 steady-state ones (a step of soundnet-large costs ~0.3 s on a CPU)


def tiny_config(shards, out, **kw) -> TrainConfig:
    """The default recipe (random crops, a schedule) with every augmentation (mixup too): each draw must reach
    the device without reading anything back."""
    return TrainConfig(shards=str(shards), out=str(out), random_crop=True, augment="gain=6,polarity,mixup=0.2",
                       **{**TINY, "epochs": 1, "max_steps": STEPS}, verbose=False, **kw)


@pytest.mark.slow
def test_steady_state_steps_read_nothing_back_from_the_device(shards, tmp_path, monkeypatch):
    """With the bar on and --log-batches (the loop's every per-step path), steps 3..8 read nothing."""
    reads = HostReads(monkeypatch)
    result = train(tiny_config(shards, tmp_path / "run", progress=True, checkpoint_every=0, log_batches=True),
                   on_step=reads.on_step)
    assert result.steps == STEPS and len((tmp_path / "run" / "steps.jsonl").read_text().splitlines()) == STEPS
    steady = reads.per_step(WARM_UP_STEPS + 1, STEPS)
    assert {s: r for s, r in steady.items() if r} == {}, "host reads in steady-state steps"
    # the counter is live: the epoch's end (metrics, validation) does read its totals back, by design
    assert any(step == STEPS for step, _, _ in reads.events), reads.events


@pytest.mark.slow
def test_a_mid_epoch_checkpoint_is_the_only_read_and_only_at_its_step(shards, tmp_path, monkeypatch):
    """last.pt every 3 steps reads the epoch's totals then, and only then (which also shows the counter
    sees a read made inside the loop)."""
    reads = HostReads(monkeypatch)
    train(tiny_config(shards, tmp_path / "run", progress=False, checkpoint_every=3), on_step=reads.on_step)
    steps_with_reads = {s for s, r in reads.per_step(WARM_UP_STEPS + 1, STEPS).items() if r}
    assert steps_with_reads == {4, 7}   # the work after steps 3 and 6: save last.pt, then steps 4 and 7


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_the_bar_shows_the_last_loss_that_has_reached_the_host(device):
    from fmashard.train.display import LossReadout

    readout = LossReadout()
    assert f"loss {readout}" == "loss -"      # the bar formats the field when it draws
    readout.push(torch.tensor(1.25, device=device))
    if device == "cuda":
        torch.cuda.synchronize()
    assert str(readout) == "1.2500"
    readout.push(torch.tensor(0.5, device=device) * 1)
    if device == "cuda":
        torch.cuda.synchronize()
    assert f"{readout}" == "0.5000" and readout.host.is_pinned() == (device == "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_steady_state_under_cuda_sync_debug_mode_error(shards, tmp_path):
    """Any synchronising CUDA call during the steady-state steps raises (bf16: fp16's GradScaler reads
    its found-inf flag every step by design)."""
    def strict_after_warm_up(step, epoch):
        if step == WARM_UP_STEPS:
            torch.cuda.set_sync_debug_mode("error")
        if step == STEPS:   # the last step: validation and the epoch's records read the device by design
            torch.cuda.set_sync_debug_mode(0)

    config = tiny_config(shards, tmp_path / "run", device="cuda", amp=True, amp_dtype="bf16", progress=True,
                         checkpoint_every=0, log_batches=True)
    try:
        result = train(config, on_step=strict_after_warm_up)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert result.steps == STEPS


def _stop_ranks(rank: int, world: int, port: int, out) -> None:
    import os

    import torch.distributed as torch_dist

    from fmashard.train.distributed import STOP_CHECK_EVERY, stop_requested

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # rank 1 is asked to stop after step 3; the ranks agree at the next multiple of STOP_CHECK_EVERY
        out[rank] = next(step for step in range(1, 3 * STOP_CHECK_EVERY)
                         if stop_requested(rank == 1 and step >= 3, step))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
def test_ranks_agree_on_a_stop_at_the_same_step():
    import socket

    import torch.multiprocessing as mp

    from fmashard.train.distributed import STOP_CHECK_EVERY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(_stop_ranks, args=(2, port, out), nprocs=2)
    assert dict(out) == {0: STOP_CHECK_EVERY, 1: STOP_CHECK_EVERY}


def test_one_process_stops_at_once():
    from fmashard.train.distributed import stop_requested

    assert stop_requested(True, 3) and not stop_requested(False, 20)
    assert Counter(stop_requested(s == 7, s) for s in range(1, 30))[True] == 1
