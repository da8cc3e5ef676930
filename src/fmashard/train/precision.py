"""Precision, as nanoGPT does it: one `ctx` (autocast bf16/fp16, or nullcontext without --amp) for every
forward pass of a run, and `GradScaler(enabled=fp16)` in the training step, so fp32, bf16 and fp16 share
one code path.

    ctx, dtype = autocast_context(device, amp=True, amp_dtype="auto")   # bf16 where supported, else fp16
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from fmashard.errors import UserError, log

AMP_DTYPES = ("auto", "bf16", "fp16")


def amp_dtype_for(device: torch.device, amp_dtype: str) -> torch.dtype:
    """bf16 where the device has it (any CPU, CUDA from Ampere), else fp16; or what was asked for."""
    if amp_dtype == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--amp-dtype bf16: this GPU has no bfloat16; use --amp-dtype fp16")
        return torch.bfloat16
    if amp_dtype == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast_context(device: torch.device, amp: bool, amp_dtype: str = "auto"):
    """(ctx, dtype or None): the one autocast context of a run; `nullcontext()` without --amp."""
    if not amp:
        return nullcontext(), None
    dtype = amp_dtype_for(device, amp_dtype)
    try:
        ctx = torch.autocast(device.type, dtype=dtype)
    except RuntimeError as exc:  # an autocast that this torch/device combination lacks
        raise UserError(f"--amp: torch.autocast({device.type!r}, {dtype}) is not supported here ({exc})") from None
    if device.type == "cpu" and not _fast_cpu_amp(dtype):
        log.warning("--amp %s on this CPU: no native %s convolutions (needs AVX512-BF16/AMX), so convolutions "
                    "take PyTorch's slow reference path; fp32 (no --amp) is faster here",
                    "bf16" if dtype == torch.bfloat16 else "fp16", dtype)
    return ctx, dtype


def _fast_cpu_amp(dtype: torch.dtype) -> bool:
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return True
