"""bf16 on AMX CPUs (fmashard.cpu_isa): `import fmashard` caps oneDNN below AMX before torch runs, a user's
own ONEDNN_MAX_CPU_ISA is kept, a cap that came too late makes --amp train in fp32, and the issue-23
probe gives finite gradients.  Each check holds on any x86 CPU: on one without AMX the kernels are never
AMX ones, with or without the cap."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fmashard import cpu_isa

# oneDNN runs bf16 convolutions where the CPU has bf16 instructions (else torch's own reference path runs)
ONEDNN_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

BF16_STEP = """
import torch
conv = torch.nn.Conv1d(16, 16, 4, stride=2)
x = torch.randn(2, 16, 256, requires_grad=True)
with torch.autocast("cpu", dtype=torch.bfloat16):
    y = conv(x)
y.float().sum().backward()
"""


def python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ONEDNN_VERBOSE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                          env={**clean, **env})


def conv_kernels(stdout: str) -> list[str]:
    return [line.split(",")[6] for line in stdout.splitlines() if ",exec,cpu,convolution," in line]


def test_import_fmashard_caps_onednn_before_torch_runs():
    result = python("import fmashard, os, fmashard.cpu_isa as c\n" + BF16_STEP +
                    "print('CAP', os.environ['ONEDNN_MAX_CPU_ISA'], c.cap_source)", ONEDNN_VERBOSE="1")
    kernels = conv_kernels(result.stdout)
    assert len(kernels) >= 3 or not ONEDNN_BF16, result.stdout[-2000:]   # forward, backward data and weights
    assert not any("amx" in k for k in kernels), kernels
    assert f"CAP {cpu_isa.SAFE_ISA} before-torch" in result.stdout


def test_without_the_cap_an_amx_cpu_runs_amx_kernels():
    """The reference the cap is measured against: torch first (no cap) gives AMX kernels exactly on AMX CPUs."""
    result = python(BF16_STEP + "import fmashard", ONEDNN_VERBOSE="1")
    assert any("amx" in k for k in conv_kernels(result.stdout)) == cpu_isa.cpu_has_amx()


def test_a_users_own_isa_is_kept():
    result = python("import fmashard, os, fmashard.cpu_isa as c; print(os.environ['ONEDNN_MAX_CPU_ISA'], "
                    "c.cap_source)", ONEDNN_MAX_CPU_ISA="AVX2")
    assert result.stdout.split() == ["AVX2", "user"]


def test_a_cap_that_came_too_late_makes_amp_fp32_on_amx_only():
    """torch ran a convolution before fmashard was imported: the cap cannot act, the kernels it finds are
    AMX ones exactly on an AMX CPU, and --amp then trains in fp32 there (bf16 elsewhere)."""
    code = ("import torch\ntorch.nn.functional.conv1d(torch.randn(1, 2, 50), torch.randn(2, 2, 3))\n"
            "import fmashard, json\nfrom fmashard.train.precision import autocast_context, bf16_conv_kernels\n"
            "ctx, dtype = autocast_context(torch.device('cpu'), True)\n"
            "print(json.dumps({'dtype': str(dtype), 'kernels': bf16_conv_kernels()}))")
    out = json.loads(python(code).stdout.strip().splitlines()[-1])
    amx = cpu_isa.cpu_has_amx()
    assert any("amx" in k for k in out["kernels"]) == amx and (len(out["kernels"]) >= 3 or not ONEDNN_BF16)
    assert out["dtype"] == ("None" if amx else "torch.bfloat16")


def test_this_test_process_runs_with_the_cap():
    from fmashard.train.precision import amx_unsafe, bf16_conv_kernels

    assert os.environ[cpu_isa.ISA_VARIABLE] == cpu_isa.SAFE_ISA
    assert not any("amx" in k for k in bf16_conv_kernels()) and not amx_unsafe()


@pytest.mark.slow
def test_the_issue_23_probe_gives_finite_gradients_20_times():
    """SoundNet, seed 0, two random windows of 56,798 samples, forward and backward under CPU bf16 autocast,
    20 times in one process (uncapped on an AMX CPU: 6-12 of 20 give NaN or gradients above 1e3)."""
    from fmashard.models import build_model

    torch.manual_seed(0)
    model = build_model("soundnet", 8, 56_798)
    x, y = torch.randn(2, 1, 56_798), torch.tensor([0, 5])
    worst = []
    for _ in range(20):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        worst.append(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()], float("inf"))))
    assert all(v == v and v <= 1e3 for v in worst), worst
    assert max(worst) / min(worst) < 1.5, worst   # the same step: the same gradients, up to bf16 rounding
