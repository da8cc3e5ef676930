"""How cost grows with the corpus, up to fma_full's size, measured on synthetic inputs through the real code.

    .venv/bin/python benchmarks/scale.py                      # every part, default sizes (about 8 minutes)
    .venv/bin/python benchmarks/scale.py --parts manifest,loader --shards 100,1000 --out /tmp/scale.json

Parts (each size measured in a fresh process, so its peak RSS is its own; inputs: benchmarks/scale_inputs.py,
measurements: benchmarks/scale_rows.py):
  planning  `fmashard fma-info` and `fmashard build --fma-dir --subset full` up to the first shard task, over a
            generated FMA tracks.csv of --rows rows (52 columns, 3 header lines); `--long-tracks all` plans from
            sparse WAV headers at every fma_full path (tracks.csv's durations; the audio bytes never matter)
  manifest  written size, write, read + validate (`load_manifest`) and the loader's reader (`resolve_source`) of
            manifests of --shards shards x --samples-per-shard samples (per-sample crc32 included)
  loader    per size and world size (--worlds x --workers): every rank's plan computed in this process (CPU per
            rank, memory), equal batches per rank and an exact epoch; a real ShardLoader on the first and last
            rank: time to the first batch, main-process and per-worker memory; the loader state's checkpoint
  ray       `--engine ray` and `--engine local` over --ray-sizes tracks of 1 s, one track per shard
            (`--clip-seconds 1 --min-seconds 0.5`): seconds per shard as the shard count grows
Writes --out (JSON: figures, growth exponents per step, goals) and one PNG per part beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src"), str(ROOT)]

PARTS = ("planning", "manifest", "loader", "ray")
FMA_FULL_TRACKS = 106_574


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--work", default="/tmp/fmashard-scale", help="generated inputs (kept and reused)")
    parser.add_argument("--rows", type=ints, default=[13_322, 26_643, 53_287, FMA_FULL_TRACKS],
                        help="tracks.csv rows (planning)")
    parser.add_argument("--bio-bytes", type=int, default=0, help="free text per row in artist.bio (planning)")
    parser.add_argument("--shards", type=ints, default=[100, 1_000, 3_000, 10_000], help="manifest and loader")
    parser.add_argument("--samples-per-shard", type=int, default=100, help="10,000 shards: 1,000,000 samples")
    parser.add_argument("--clip-samples", type=int, default=661_500, help="samples per record (30 s)")
    parser.add_argument("--worlds", type=ints, default=[1, 8, 64], help="ranks (loader)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank (loader)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="manifest write/read rounds; loaders started per rank")
    parser.add_argument("--ray-sizes", type=ints, default=[10, 100, 1_000, 4_700], help="tiny shards (ray)")
    parser.add_argument("--ray-engines", default="ray,local")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    return args


# ---------------------------------------------------------------------------------------- children
def run_child(task: dict) -> dict:
    """One measurement in a fresh interpreter; its JSON is the last line of its stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"scale.py: the {task['row']} measurement failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {task['row']} {task.get('size', '')}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


def child_main(task: dict) -> None:
    import scale_rows

    row = task.pop("row")
    task.pop("size", None)
    print(json.dumps(getattr(scale_rows, row)(**task)))


# ---------------------------------------------------------------------------------------- parts
def part_planning(args) -> list[dict]:
    from scale_inputs import write_fma_corpus

    rows = []
    for size in args.rows:
        fma_dir = Path(args.work) / f"fma-{size}-bio{args.bio_bytes}"
        corpus = write_fma_corpus(fma_dir, size, bio_bytes=args.bio_bytes, sparse_audio=True)
        for mode in ("first", "all"):
            result = run_child({"row": "planning", "size": f"{size} rows, --long-tracks {mode}",
                                "fma_dir": str(fma_dir), "long_tracks": mode, "work": args.work})
            rows.append({"rows": size, "long_tracks": mode, **corpus, **result})
    return rows


def part_manifest(args) -> list[dict]:
    return [{"shards": shards, **run_child({"row": "manifest", "size": f"{shards} shards",
                                            "manifest_path": str(shard_set(args, shards)), "rounds": args.rounds})}
            for shards in args.shards]


def part_loader(args) -> list[dict]:
    return [{"shards": shards, **run_child({
        "row": "loader", "size": f"{shards} shards", "manifest_path": str(shard_set(args, shards)),
        "worlds": args.worlds, "workers": args.workers, "batch_size": args.batch_size,
        "checkpoint_dir": str(Path(args.work) / "checkpoints"), "rounds": args.rounds})} for shards in args.shards]


def shard_set(args, shards: int) -> Path:
    from scale_inputs import write_scale_shards

    root = Path(args.work) / f"shards-{shards}x{args.samples_per_shard}-clip{args.clip_samples}"
    return write_scale_shards(root, shards, shards * args.samples_per_shard, args.clip_samples)


def part_ray(args) -> dict:
    from scale_inputs import write_tiny_corpus

    table_dir = write_tiny_corpus(Path(args.work) / "tiny", args.ray_sizes)
    return run_child({"row": "ray_build", "size": ",".join(map(str, args.ray_sizes)), "table_dir": str(table_dir),
                      "sizes": args.ray_sizes, "workers": 2, "work": args.work,
                      "engines": args.ray_engines.split(",")})


# ---------------------------------------------------------------------------------------- record
def environment() -> dict:
    import platform

    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""
    lscpu = dict(line.split(":", 1) for line in run("lscpu").splitlines() if ":" in line)
    dirty = "-dirty" if run("git", "status", "--porcelain", "--untracked-files=no") else ""
    return {"commit": run("git", "rev-parse", "HEAD") + dirty, "command": " ".join([sys.executable, *sys.argv]),
            "cpu": lscpu.get("Model name", "").strip(), "cpus": os.cpu_count(),
            "cpu_flags": lscpu.get("Flags", "").strip(),
            "python": platform.python_version(), "load_average_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    from scale_report import summarize, write_plots

    results = {"environment": environment(), "settings": {k: v for k, v in vars(args).items() if k != "child"}}
    for part in args.parts:
        print(f"=== {part}", flush=True)
        results[part] = globals()[f"part_{part}"](args)
    results["environment"]["load_average_end"] = os.getloadavg()
    results["summary"] = summarize(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for path in write_plots(results, out.with_suffix("")):
        print(f"wrote {path}")
    print(f"wrote {out}")
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
