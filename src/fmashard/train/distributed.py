"""Distributed stage: one process per device under `torchrun`, nothing to do otherwise.

    dist = init_distributed("auto")     # reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR from torchrun
    ...                                 # gloo on CPU, nccl on CUDA; only dist.is_main writes files or prints
    all_reduce_sum(totals)              # metrics: sums over ranks, once per epoch (never per eval step)
    stop_requested(flag, step)          # a SIGTERM on any rank stops all: agreed every STOP_CHECK_EVERY steps,
                                        # on the host (gloo), so the training loop never waits for the device
    dist.close()

Without torchrun (`WORLD_SIZE` unset or 1) every helper is a no-op on a single process, so the training
loop has one code path.  Each rank reads its own shards: the loader splits samples by rank itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from fmashard.data.device import resolve_device
from fmashard.data.loader import rank_world
from fmashard.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False   # True when init_distributed created the process group (and closes it)
    threads_before: int | None = None   # torch's thread count before init_distributed changed it (close restores)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        global _HOST_GROUP
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()   # and every group made from it (the host group too)
            _HOST_GROUP = None
        if self.threads_before is not None:      # no process-wide setting outlives the run
            torch.set_num_threads(self.threads_before)


def init_distributed(device_name: str = "auto") -> DistContext:
    """The process group from the torchrun environment (gloo on CPU, nccl on CUDA) and this rank's device.
    A group the caller already initialised is reused (and left open)."""
    device = resolve_device(device_name)
    rank, world = rank_world()
    if torch_dist.is_available() and torch_dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local_rank, _rank_device(device, local_rank))
    if world <= 1:
        return DistContext(0, 1, 0, device)
    if not torch_dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _rank_device(device, local_rank)
    threads_before = None
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl", device_id=device)
        host_group()   # collective: every rank makes it now, not at its first use
    else:
        # CPU ranks share the cores: without this every rank starts one thread per core.
        per_rank = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        threads_before = torch.get_num_threads()
        torch.set_num_threads(per_rank)
        torch_dist.init_process_group("gloo")
    return DistContext(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank, device, owns_group=True,
                       threads_before=threads_before)


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None:
        return device
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
    return torch.device("cuda", local_rank)


def _active() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (gloo reduces CPU tensors, nccl CUDA ones); returns it."""
    if _active():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if _active():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return tensor


def all_gather_int(value: int, device: torch.device) -> list[int]:
    """[value of rank 0, value of rank 1, ...]."""
    if not _active():
        return [int(value)]
    mine = torch.tensor([int(value)], dtype=torch.int64, device=device)
    parts = [torch.zeros_like(mine) for _ in range(torch_dist.get_world_size())]
    torch_dist.all_gather(parts, mine)
    return [int(p.item()) for p in parts]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on at least one (e.g. a stop request from a signal)."""
    if not _active():
        return flag
    return bool(all_reduce_max(torch.tensor([int(flag)], device=device)).item())


STOP_CHECK_EVERY = 20   # steps between the ranks' agreement on a stop request under DDP
_HOST_GROUP = None      # the gloo group of host-side flags when the default group is NCCL


def host_group():
    """A process group whose collectives run on host (CPU) tensors: None (the default group) when that is
    gloo already, else a gloo group made once (collective: every rank must call it, in the same order)."""
    global _HOST_GROUP
    if torch_dist.get_backend() == "gloo":
        return None
    if _HOST_GROUP is None:
        _HOST_GROUP = torch_dist.new_group(backend="gloo")
    return _HOST_GROUP


def stop_requested(flag: bool, step: int, every: int = STOP_CHECK_EVERY) -> bool:
    """Whether to stop after optimizer step `step` because a stop was requested (`flag`, a signal).  One
    process: `flag` itself.  Under DDP every rank must stop at the same step, so the ranks agree, only at
    the steps that are multiples of `every` (every rank calls this after every step, with the same `step`):
    a MAX over ranks of a CPU tensor in the host group, which never waits for the device (`any_rank`
    reduces a device tensor and reads it back: a host-device sync, fine once an epoch, not per step)."""
    if not _active():
        return flag
    if step % every:
        return False
    mine = torch.tensor([int(flag)], dtype=torch.int32)
    torch_dist.all_reduce(mine, op=torch_dist.ReduceOp.MAX, group=host_group())
    return bool(mine.item())   # a CPU tensor: no device involved


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) before evaluating, so all ranks
    evaluate the same model as the one rank 0 saves."""
    if _active():
        for buffer in module.buffers():
            torch_dist.broadcast(buffer, src=0)


def barrier() -> None:
    if _active():
        torch_dist.barrier()
