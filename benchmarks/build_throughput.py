"""Build throughput: `build_shards` with 1 and 2 workers against decode+resample alone on the same files.

    .venv/bin/python benchmarks/build_throughput.py [--fma-dir DIR] [--rounds 3] [--genres 8 --tracks-per-genre 20]

Without --fma-dir a demo corpus (4 genres x 10 tracks, real MP3s) is generated into a temp folder.
Method: files read once before timing (page cache warm); per round, in this order: decode+resample alone
(1 process, `decode_track` for every planned track, nothing written), the same plus pcm16 encoding
(`process_track`, what a worker does), a full build with 1 worker (decoding in the main process, so
the difference is the serial cost of tar writing, sha256, crc32, .idx, journal, manifest and reading
tracks.csv, which is also reported alone), a full build with 2 worker processes.  Best of the rounds;
wall and CPU time (CPU time is less sensitive to other load on the machine; the load average is
recorded).  Writes benchmarks/results/build_throughput.json.

Engines (issue 15, --engine-shard-size, 16MB: about a dozen shards): each build in a fresh interpreter,
wall time of `build_shards` alone, alternated within every round: the previous per-track pool build
(--previous REV, default f2e0604, the last commit before the shard task: its build.py is 200c6fe's,
its decoder is today's; run from `git archive REV` in a temp folder) with 1 and 2 workers, the local
engine with 1 and 2 workers, and --engine ray on a local Ray with 2 CPUs that this script starts once
(each build is a new Ray job, so it pays for starting its workers).  Min/median/max over the rounds;
Ray's overhead per shard = (median ray - median local 2 workers) / shards.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    import numpy
    import soundfile
    import soxr

    return {"cpu_model": cpu, "cores": os.cpu_count(), "ram_gb": round(mem / 2**20, 1), "git_commit": commit,
            "python": platform.python_version(), "numpy": numpy.__version__, "soxr": soxr.__version__,
            "soundfile": soundfile.__version__, "libsndfile": soundfile.__libsndfile_version__}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float, object]:
    """(wall s, CPU s of this process and its finished children, result)."""
    cpu0, kids0, wall0 = time.process_time(), children_cpu(), time.perf_counter()
    result = fn()
    return time.perf_counter() - wall0, time.process_time() - cpu0 + children_cpu() - kids0, result


# one build in a fresh interpreter: prints {"wall_s", "shards", "tracks"} (wall time of build_shards alone)
_ONE_BUILD = """
import json, sys, time
args = json.loads(sys.argv[1])
address = args.pop("ray_address", None)
if address:
    import logging, ray
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
from shard_tools.build import BuildConfig, build_shards
began = time.perf_counter()
report = build_shards(BuildConfig(**args))
print(json.dumps({"wall_s": time.perf_counter() - began, "shards": report.shards_built,
                  "tracks": report.tracks_decoded}))
"""


def spread(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3), "rounds": [round(v, 3) for v in values]}


def one_build(code_root: Path, out: Path, config: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": f"{code_root / 'src'}:{code_root}"}
    done = subprocess.run([sys.executable, "-c", _ONE_BUILD, json.dumps({**config, "out": str(out)})], env=env,
                          cwd=code_root, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"build failed ({code_root}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def previous_tree(rev: str, work: Path) -> Path:
    """The build code of commit `rev` (shard_tools/ and src/), extracted without touching the repository."""
    tree = work / f"previous-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "shard_tools", "src"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def engine_rounds(fma_dir: Path, work: Path, rounds: int, shard_size: str, previous: str) -> dict:
    """The engines section (see the module docstring)."""
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start_s, address = time.perf_counter() - began, ray.get_runtime_context().gcs_address
    old = previous_tree(previous, work)
    base = {"fma_dir": str(fma_dir), "shard_size": shard_size}
    variants = {f"previous_{previous}_1_worker": (old, {"workers": 1}),
                f"previous_{previous}_2_workers": (old, {"workers": 2}),
                "local_1_worker": (ROOT, {"workers": 1}), "local_2_workers": (ROOT, {"workers": 2}),
                "ray_local_2_cpus": (ROOT, {"workers": 2, "engine": "ray", "ray_address": address})}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    shards = tracks = None
    try:
        for n in range(rounds):
            order = list(variants) if n % 2 == 0 else list(reversed(variants))   # alternate the order too
            for name in order:
                code, extra = variants[name]
                result = one_build(code, work / f"engine-{name}", {**base, **extra})
                walls[name].append(result["wall_s"])
                shards, tracks = result["shards"], result["tracks"]
            print(f"engines round {n}: {json.dumps({k: round(v[-1], 2) for k, v in walls.items()})}", flush=True)
    finally:
        ray.shutdown()
    rows = {name: {**spread(v), "tracks_per_s_median": round(tracks / statistics.median(v), 2)}
            for name, v in walls.items()}
    med = {name: row["median"] for name, row in rows.items()}
    return {"shard_size": shard_size, "shards": shards, "tracks": tracks, "previous_commit": previous,
            "ray_local_start_s": round(ray_start_s, 2), "wall_s": rows,
            "local_vs_previous_median_pct": {
                w: round(100 * (med[f"local_{w}"] / med[f"previous_{previous}_{w}"] - 1), 1)
                for w in ("1_worker", "2_workers")},
            "ray_overhead_per_shard_s": round((med["ray_local_2_cpus"] - med["local_2_workers"]) / shards, 3),
            "ray_overhead_per_shard_s_min_based": round(
                (rows["ray_local_2_cpus"]["min"] - rows["local_2_workers"]["min"]) / shards, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fma-dir", type=Path, help="FMA folder (default: generate the demo corpus)")
    parser.add_argument("--genres", type=int, default=4)
    parser.add_argument("--tracks-per-genre", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shard-size", default="64MB")
    parser.add_argument("--engine-rounds", type=int, default=3, help="rounds of the engines section (0: skip)")
    parser.add_argument("--engine-shard-size", default="16MB")
    parser.add_argument("--previous", default="f2e0604", help="commit of the previous per-track pool build")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "build_throughput.json")
    args = parser.parse_args()

    from shard_tools.audio import decode_track, process_track
    from shard_tools.build import BuildConfig, build_shards, load_build_selection, task_of
    from shard_tools.build_plan import plan_shards

    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="fmashard-bench-"))
    try:
        fma_dir = args.fma_dir
        corpus_seconds = None
        if fma_dir is None:
            from shard_tools.demo_corpus import make_demo_corpus

            fma_dir = work / "fma"
            corpus_seconds, _, _ = timed(lambda: make_demo_corpus(fma_dir, args.genres, args.tracks_per_genre))
        config = BuildConfig(fma_dir=fma_dir, out=work / "out", shard_size=args.shard_size, workers=1)
        selection = load_build_selection(config)
        tasks = [task_of(config, t) for p in plan_shards(selection.tracks, config.samples_per_shard, 0)
                 for t in p.tracks]
        audio_bytes = sum(Path(t.path).read_bytes().__len__() for t in tasks if Path(t.path).exists())  # warm

        def decode_only():
            for task in tasks:
                try:
                    decode_track(task.path, task.settings)
                except Exception:  # noqa: BLE001 - the skipped tracks cost their (failed) decode too
                    pass

        def build(workers: int):
            out = work / f"out-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            return build_shards(BuildConfig(fma_dir=fma_dir, out=out, shard_size=args.shard_size, workers=workers))

        metadata_s = min(timed(lambda: load_build_selection(config))[1] for _ in range(3))  # CPU s, in every build
        runs: dict[str, list] = {"decode_resample": [], "decode_resample_encode": [], "build_1_worker": [],
                                 "build_2_workers": []}
        reports = {}
        for _ in range(args.rounds):
            runs["decode_resample"].append(timed(decode_only)[:2])
            runs["decode_resample_encode"].append(timed(lambda: [process_track(t) for t in tasks])[:2])
            for workers, name in ((1, "build_1_worker"), (2, "build_2_workers")):
                wall, cpu, report = timed(partial(build, workers))
                runs[name].append((wall, cpu))
                reports[name] = report
            print(f"round: {json.dumps({k: [round(x, 2) for x in v[-1]] for k, v in runs.items()})}", flush=True)

        best = {name: {"wall_s": round(min(w for w, _ in v), 3), "cpu_s": round(min(c for _, c in v), 3),
                       "tracks_per_s": round(len(tasks) / min(w for w, _ in v), 2),
                       "rounds_wall_s": [round(w, 3) for w, _ in v], "rounds_cpu_s": [round(c, 3) for _, c in v]}
                for name, v in runs.items()}
        base, one, two = best["decode_resample"], best["build_1_worker"], best["build_2_workers"]
        result = {
            "benchmark": "build_throughput",
            "command": " ".join([Path(sys.executable).relative_to(ROOT).as_posix()
                                 if sys.executable.startswith(str(ROOT)) else sys.executable, *sys.argv]),
            "method": __doc__.split("\n\n", 2)[2].strip().replace("\n", " "),
            "machine": {**machine(), "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
            "corpus": {"fma_dir": str(args.fma_dir) if args.fma_dir else f"demo corpus {args.genres}x"
                       f"{args.tracks_per_genre} (generated in {corpus_seconds:.1f} s)",
                       "tracks_planned": len(tasks), "tracks_written": reports["build_1_worker"].tracks_written,
                       "tracks_skipped": reports["build_1_worker"].tracks_skipped, "mp3_bytes": audio_bytes,
                       "output_bytes": reports["build_1_worker"].bytes, "shard_size": args.shard_size},
            "results": best,
            "overhead_vs_decode_resample_pct": {
                "wall": round(100 * (one["wall_s"] / base["wall_s"] - 1), 1),
                "cpu": round(100 * (one["cpu_s"] / base["cpu_s"] - 1), 1)},
            "overhead_vs_decode_resample_encode_pct": {
                "wall": round(100 * (one["wall_s"] / best["decode_resample_encode"]["wall_s"] - 1), 1),
                "cpu": round(100 * (one["cpu_s"] / best["decode_resample_encode"]["cpu_s"] - 1), 1)},
            "metadata_load_cpu_s": round(metadata_s, 3),
            "overhead_excluding_metadata_load_pct": {
                "wall": round(100 * ((one["wall_s"] - metadata_s) / base["wall_s"] - 1), 1),
                "cpu": round(100 * ((one["cpu_s"] - metadata_s) / base["cpu_s"] - 1), 1)},
            "speedup_2_workers": round(one["wall_s"] / two["wall_s"], 2),
            "speedup_2_workers_per_round": [round(a[0] / b[0], 2) for a, b in
                                            zip(runs["build_1_worker"], runs["build_2_workers"])],
            "note": "build_2_workers cpu_s is the main process only (workers are forkserver children)",
        }
        if args.engine_rounds:
            result["engines"] = engine_rounds(Path(fma_dir), work, args.engine_rounds, args.engine_shard_size,
                                              args.previous)
            result["machine"]["load_average_at_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        summary = {name: {k: v[k] for k in ("wall_s", "cpu_s", "tracks_per_s")} for name, v in best.items()}
        print(json.dumps({"results": summary, **{k: v for k, v in result.items() if k.startswith(("overhead",
                          "speedup", "metadata", "engines"))}}, indent=1))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
