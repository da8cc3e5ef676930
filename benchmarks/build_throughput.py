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
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fma-dir", type=Path, help="FMA folder (default: generate the demo corpus)")
    parser.add_argument("--genres", type=int, default=4)
    parser.add_argument("--tracks-per-genre", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shard-size", default="64MB")
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        summary = {name: {k: v[k] for k in ("wall_s", "cpu_s", "tracks_per_s")} for name, v in best.items()}
        print(json.dumps({"results": summary, **{k: v for k, v in result.items() if k.startswith(("overhead",
                          "speedup", "metadata"))}}, indent=1))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
