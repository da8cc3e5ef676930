"""Issue 26's measure of the read path: the stays and returns of a reader who follows the code that reads one segment.

    .venv/bin/python benchmarks/segment_walk.py [--tree NAME=SRC ...] [--json OUT]

One shard of 6 records is read by `WorkerStream` as one batch of 6 (the first batch is exactly the read of
one segment and its assembly), three ways: a local folder (read batch by batch, 2 read threads), http with
read_threads 1 (one stream in the loader's thread) and http with read_threads 2 (ranged jobs on the read
threads; the pool's `submit` is made synchronous for the count, so a job is read where it is submitted).

The count (`sys.settrace` from `next(iter(stream))` to the first batch): every function of the `fmashard`
package that runs is a node, once (its first call; a generator resumed is the same node), under the nearest
fmashard function that called it (stdlib, numpy and torch frames are see-through), from where WorkerStream
reads the segment (`_read_run`; local: `_gathered`).  Calls into the layers below the data stage (storage,
format, errors) are not walked: the reader reads the call, not that layer (as the layer contract intends).
A reader walks this tree depth first in the order of first calls, reading each function once: entering a
function appends its file, finishing one appends its caller's file again.  Repeats of one file in a row
merge; each entry left is a *stay*, and a stay reached by finishing a callee (back in the caller's file) is a *return*.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


ROOTS = ("WorkerStream._read_run", "WorkerStream._gathered")   # where WorkerStream reads a segment
BELOW = ("storage/", "format/", "errors.py")   # the layers under the data stage: not walked into


def call_tree(stream) -> tuple[dict, list]:
    """(children by node, roots) of the fmashard functions that read the segment of the stream's first batch;
    node = (file, qualified name)."""
    children: dict = {}
    roots: list = []

    def node_of(frame):
        name = frame.f_code.co_filename
        if "/src/fmashard/" not in name:
            return None
        return name.split("/src/fmashard/", 1)[1], frame.f_code.co_qualname

    def tracer(frame, event, arg):
        if event == "call" and (node := node_of(frame)) is not None:
            caller = frame.f_back
            while caller is not None and node_of(caller) is None:
                caller = caller.f_back
            parent = node_of(caller) if caller is not None else None
            if node in children or node[0].startswith(BELOW):
                return None
            if parent in children:
                children[parent].append(node)
            elif node[1] in ROOTS:
                roots.append(node)
            else:
                return None
            children[node] = []
        return None
    sys.settrace(tracer)
    try:
        next(iter(stream))
    finally:
        sys.settrace(None)
    return children, roots


def walk(children: dict, roots: list) -> dict:
    stays: list[tuple[str, bool]] = []

    def visit(node, back: bool = False):
        if not stays or stays[-1][0] != node[0]:
            stays.append((node[0], back))
        for child in children[node]:
            visit(child)
            if stays[-1][0] != node[0]:
                stays.append((node[0], True))
    for root in roots:
        visit(root)
    files = {f for f, _ in stays}
    return {"stays": len(stays), "files": len(files), "returns": sum(b for _, b in stays),
            "walk": [f + (" (back)" if b else "") for f, b in stays]}


def _now(self, fn, *args, **kwargs):
    fut = Future()
    try:
        fut.set_result(fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - as the pool would
        fut.set_exception(exc)
    return fut


def worker(src: str) -> None:
    sys.path[:0] = [src, str(ROOT / "tests"), str(ROOT)]
    from fmashard.data.collate import BatchBuffers
    from fmashard.data.loader import WorkerStream
    from fmashard.data.plan import PlanConfig, worker_plan
    from fmashard.data.sources import resolve_source
    from fmashard.errors import ErrorPolicy
    from http_server import FolderServer
    from synth_shards import write_synthetic_shards
    ThreadPoolExecutor.submit = _now

    def stream(source, threads):
        spec = resolve_source(source)
        plan = worker_plan(spec, PlanConfig(batch_size=6, shuffle=False), 0, 0, 1, 0, 1)
        buffers = BatchBuffers(spec, 6, pin=False, shared=False, pending=plan.pending, samples=plan.num_samples)
        return WorkerStream(spec, plan, ErrorPolicy(), buffers, read_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_shards(tmp, [6], clip_samples=500)
        out = {"local-2t": walk(*call_tree(stream(tmp, 2)))}
        with FolderServer(tmp) as url:
            out["http-1t"] = walk(*call_tree(stream(url, 1)))
            out["http-2t"] = walk(*call_tree(stream(url, 2)))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="NAME=SRC, repeatable (default: this checkout)")
    ap.add_argument("--json", help="write the walks here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--verbose", action="store_true", help="print each walk's files")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    result = {}
    for tree in args.tree or [f"this={ROOT / 'src'}"]:
        name, _, src = tree.partition("=")
        out = subprocess.run([sys.executable, __file__, "--worker", src], capture_output=True, text=True, check=True)
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
        for path, w in result[name].items():
            print(f"{name:8s} {path:9s} {w['stays']:3d} stays in {w['files']} files, {w['returns']} returns")
            if args.verbose:
                print("    " + " > ".join(w["walk"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
