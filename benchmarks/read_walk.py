"""The walk of the read path (issue 26): which of fmashard's files the code passes through to read.

    .venv/bin/python benchmarks/read_walk.py [--tree NAME=SRC ...] [--json OUT]

A small synthetic split (2 shards of 3 records) is read by `WorkerStream` with read_threads 1 (every
call in this thread), from a local folder and over http (tests/http_server.py).  A profile hook records
the file of every Python call and return inside the `fmashard` package from the start of the stream
until its first batch; runs of one file in a row are a *stay*; a stay in a file the walk was in before is
a *return*.  Each tree runs in a fresh process (`--tree before=/tmp/old/src`: another checkout's `src`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def walk_of(stream) -> list[str]:
    """Files (relative to the package) of the calls and returns until the stream's first batch."""
    files: list[str] = []

    def hook(frame, event, arg):
        name = frame.f_code.co_filename
        if event in ("call", "return") and "/fmashard/" in name:
            short = name.split("/fmashard/", 1)[1]
            if not files or files[-1] != short:
                files.append(short)
    sys.setprofile(hook)
    try:
        next(iter(stream))
    finally:
        sys.setprofile(None)
    return files


def summary(stays: list[str]) -> dict:
    seen, returns = set(), 0
    for name in stays:
        returns += name in seen
        seen.add(name)
    return {"stays": len(stays), "files": len(seen), "returns": returns, "walk": stays}


def worker(src: str) -> None:
    sys.path[:0] = [src, str(ROOT / "tests"), str(ROOT)]
    from fmashard.data.collate import BatchBuffers
    from fmashard.data.loader import WorkerStream
    from fmashard.data.plan import PlanConfig, worker_plan
    from fmashard.data.sources import resolve_source
    from fmashard.errors import ErrorPolicy
    from http_server import FolderServer
    from synth_shards import write_synthetic_shards

    def stream(source):
        spec = resolve_source(source)
        plan = worker_plan(spec, PlanConfig(batch_size=2, shuffle=False), 0, 0, 1, 0, 1)
        buffers = BatchBuffers(spec, 2, pin=False, shared=False, pending=plan.pending, samples=plan.num_samples)
        return WorkerStream(spec, plan, ErrorPolicy(), buffers, read_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_shards(tmp, [3, 3], clip_samples=500)
        out = {"local": summary(walk_of(stream(tmp)))}
        with FolderServer(tmp) as url:
            out["http"] = summary(walk_of(stream(url)))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="NAME=SRC, repeatable (default: this checkout)")
    ap.add_argument("--json", help="write the walks here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    result = {}
    for tree in args.tree or [f"this={ROOT / 'src'}"]:
        name, _, src = tree.partition("=")
        out = subprocess.run([sys.executable, __file__, "--worker", src], capture_output=True, text=True, check=True)
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
        for path, walk in result[name].items():
            print(f"{name:8s} {path:6s} {walk['stays']:3d} stays in {walk['files']} files, {walk['returns']} returns: "
                  + " > ".join(Path(w).stem for w in walk["walk"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
