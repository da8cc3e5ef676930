"""Precision, as nanoGPT does it: one `ctx` (autocast bf16/fp16, or nullcontext without --amp) for every
forward pass of a run, and `GradScaler(enabled=fp16)` in the training step, so fp32, bf16 and fp16 share
one code path.

    ctx, dtype = autocast_context(device, amp=True, amp_dtype="auto")   # bf16 where supported, else fp16

On an AMX CPU, bf16 runs only where oneDNN is capped below AMX (`fmashard.cpu_isa`, set by `import
fmashard`); where the cap came too late (torch ran before fmashard was imported) the run takes fp32, with
a warning, rather than AMX kernels whose gradients are garbage.
"""
from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from contextlib import nullcontext
from functools import cache

import torch

from fmashard import cpu_isa
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
    if device.type == "cpu" and dtype == torch.bfloat16 and amx_unsafe():
        log.warning("--amp bf16 on this AMX CPU: oneDNN runs its AMX bf16 kernels (their gradients can be garbage: "
                    "fmashard.cpu_isa), because torch ran before fmashard was imported; training in fp32. For bf16, "
                    "set %s=%s before starting Python or import fmashard first", cpu_isa.ISA_VARIABLE,
                    cpu_isa.SAFE_ISA)
        return nullcontext(), None
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


def amx_unsafe() -> bool:
    """bf16 convolutions here would run oneDNN's AMX kernels without the user having asked for them."""
    if cpu_isa.cap_source in ("user", "before-torch", "environment") or not cpu_isa.cpu_has_amx():
        return False
    return any("amx" in kernel for kernel in bf16_conv_kernels())


@cache
def bf16_conv_kernels() -> tuple[str, ...]:
    """The oneDNN kernels of a small bf16 convolution's forward and backward passes, as ONEDNN_VERBOSE names
    them (e.g. "brgconv_bwd_w:avx512_core_bf16"): oneDNN prints them on the C stdout, read here from a file."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                conv = torch.nn.Conv1d(16, 16, 4, stride=2)
                x = torch.randn(1, 16, 64, requires_grad=True)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = conv(x)
                y.float().sum().backward()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    return tuple(line.split(",")[6] for line in lines if ",exec,cpu,convolution," in line)
