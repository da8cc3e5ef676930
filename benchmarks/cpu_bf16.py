"""CPU bf16 on this machine: speed and correctness of fp32, bf16 with oneDNN uncapped (AMX where the CPU
has it) and bf16 with fmashard's cap (fmashard.cpu_isa), side by side in one run.

    .venv/bin/python benchmarks/cpu_bf16.py [--repeats 20] [--steps 4] [--rounds 2]

Each setting runs in its own fresh process (oneDNN reads ONEDNN_MAX_CPU_ISA once), `import fmashard`
first, as the `fmashard` command does; "uncapped" sets ONEDNN_MAX_CPU_ISA=ALL (a user's own value, which
fmashard keeps).  Per setting:
- the probe of issue 23: SoundNet, seed 0, two random windows of 56,798 samples, one forward and backward
  under CPU bf16 autocast, `--repeats` times in one process: how many give a non-finite gradient or one
  above 1e3 (fp32 gives the reference: none);
- speed: SoundNet, batch 16 x 66,150 samples (16 tracks' 3-s windows), Adam steps, seconds per step
  (median of `--steps` after one warm-up), `--rounds` rounds interleaved over the settings;
- the oneDNN convolution kernels a bf16 step ran (ONEDNN_VERBOSE).
Writes benchmarks/results/cpu_bf16.json (with the CPU's model and flags).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.build_throughput import machine  # noqa: E402

SETTINGS = {"fp32": (False, None), "bf16 uncapped": (True, "ALL"), "bf16 capped (fmashard)": (True, None)}

CHILD = r"""
import json, statistics, sys, time
import fmashard
import torch, torch.nn.functional as F
from fmashard.models import build_model
from fmashard.train.precision import bf16_conv_kernels
amp, repeats, steps = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)
torch.manual_seed(0)
model = build_model("soundnet", 8, 56_798)
x, y = torch.randn(2, 1, 56_798), torch.tensor([0, 5])
bad = 0
for _ in range(repeats):
    model.zero_grad(set_to_none=True)
    with ctx():
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))
    bad += not (norm == norm and norm <= 1e3)
torch.manual_seed(0)
model = build_model("soundnet", 8, 66_150)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
x, y = torch.randn(16, 1, 66_150) * 0.1, torch.randint(0, 8, (16,))
times = []
for i in range(steps + 1):
    t = time.perf_counter()
    with ctx():
        loss = F.cross_entropy(model(x), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
print(json.dumps({"bad": bad, "repeats": repeats, "s_per_step": statistics.median(times[1:]),
                  "kernels": list(bf16_conv_kernels()) if amp else []}))
"""


def run(name: str, repeats: int, steps: int) -> dict:
    amp, isa = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if amp else "0", str(repeats), str(steps)], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_flags() -> list[str]:
    line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("amx", "avx512")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name in SETTINGS:
            rounds[name].append(run(name, args.repeats if r == 0 else 0, args.steps))
            print(name, rounds[name][-1], flush=True)
    results = {name: {"non_finite_or_above_1e3": runs[0]["bad"], "repeats": runs[0]["repeats"],
                      "s_per_step": statistics.median(x["s_per_step"] for x in runs),
                      "s_per_step_rounds": [x["s_per_step"] for x in runs], "conv_kernels": runs[0]["kernels"]}
               for name, runs in rounds.items()}
    fp32 = results["fp32"]["s_per_step"]
    for row in results.values():
        row["speedup_vs_fp32"] = round(fp32 / row["s_per_step"], 2)
    record = {"command": "benchmarks/cpu_bf16.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "cpu_flags": cpu_flags(), "torch": __import__("torch").__version__, "results": results}
    path = ROOT / "benchmarks" / "results" / "cpu_bf16.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    for name, row in results.items():
        print(f"{name:24s} {row['s_per_step']:.2f} s/step ({row['speedup_vs_fp32']}x fp32), "
              f"{row['non_finite_or_above_1e3']}/{row['repeats']} bad probes, kernels {row['conv_kernels']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
