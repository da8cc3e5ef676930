"""Correct bf16 on Intel AMX CPUs: cap oneDNN's instruction set below AMX before torch runs anything.

On CPUs with AMX (Sapphire Rapids and later: `amx_bf16` in /proc/cpuinfo), torch 2.14's oneDNN hands
bf16 convolutions to AMX kernels whose backward pass reads memory it never wrote: the same SoundNet step
gives NaN or 1e25 gradients in 6-12 of 20 repeats, never in the first of a process (fresh pages are
zero), oftener the more the heap has been used, so a test passes alone and fails in a suite
(oneDNN#5717, pytorch#169688; benchmarks/README "bf16 on AMX CPUs").  With oneDNN capped at
AVX512_CORE_FP16 (AVX-512 with its bf16 and fp16 instructions, no AMX tiles) the same step runs the
AVX-512 bf16 kernels: 0 bad in 20, and about as fast on a 2-core Xeon.

oneDNN reads `ONEDNN_MAX_CPU_ISA` once, at torch's first operation, so `import fmashard` sets it (the
`fmashard` command and `fmashard demo` import it before torch): a user who sets the variable keeps their
value, and the cap changes nothing on a CPU without AMX (it is a maximum).  A program that ran torch
operations before importing fmashard gets no cap; `fmashard.train.precision` then finds AMX kernels in
use and trains in fp32 instead of bf16, with a warning.  Torch-free: nothing here imports torch.
"""
from __future__ import annotations

import os
import sys

ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
SAFE_ISA = "AVX512_CORE_FP16"    # below AVX10_1_512_AMX: AVX-512 with bf16/fp16 instructions, no AMX

# How the cap came to be: "user" (ONEDNN_MAX_CPU_ISA was set, to another value), "environment" (it was set to
# SAFE_ISA, e.g. inherited from an fmashard parent process), "before-torch" (set here before torch was
# imported: in effect), "after-torch" (set here after: in effect only if torch had run nothing yet).
cap_source: str | None = None


def cap_onednn_isa() -> str:
    """Set ONEDNN_MAX_CPU_ISA to SAFE_ISA unless it is set already; the value in effect."""
    global cap_source
    value = os.environ.get(ISA_VARIABLE)
    if value is not None:
        if cap_source is None:
            cap_source = "environment" if value == SAFE_ISA else "user"
        return value
    os.environ[ISA_VARIABLE] = SAFE_ISA
    cap_source = "after-torch" if "torch" in sys.modules else "before-torch"
    return SAFE_ISA


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 tiles (Linux: /proc/cpuinfo's flags; elsewhere: False)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False
