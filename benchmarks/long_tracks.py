"""Long tracks: what decoding a whole track once and cutting it into clips costs per second of audio,
against one 30-s clip per file, and the loader over the shards of each.

    .venv/bin/python benchmarks/long_tracks.py [--minutes 20] [--rounds 3]

Method: the same amount of audio (`--minutes`) is written twice as stereo 44.1 kHz MP3s (libsndfile's
LAME, 128 kbit/s VBR-default quality): as 30-s files, and as 5-minute files.  Per round, in one process,
alternating: `process_track` (decode, mono, soxr HQ to 22,050 Hz, pcm16 encode: what a build worker
does) of every 30-s file with `--long-tracks first`, and of every 5-minute file with `--long-tracks all`
(10 clips each); reported as decode seconds per hour of audio (wall and CPU time of the process: CPU
time is less sensitive to other load on the machine), median of the rounds, and the ratio of the best
rounds' CPU times.  Then both are built
(`build_shards`, 1 worker) and the loader's host path (`ShardLoader`, batch 8, read threads 2) reads every
record of each, alternating, `--rounds` times: records/s, median.  Files are read once before timing (page
cache warm).  Writes benchmarks/results/long_tracks.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.build_throughput import machine  # noqa: E402


def write_mp3(path: Path, seconds: float, seed: int) -> None:
    import numpy as np
    import soundfile as sf

    rng, rate = np.random.default_rng(seed), 44100
    with sf.SoundFile(path, "w", rate, 2, "MPEG_LAYER_III", format="MP3") as f:
        for start in range(0, int(seconds * rate), 1 << 16):
            n = min(1 << 16, int(seconds * rate) - start)
            t = (start + np.arange(n)) / rate
            tone = 0.2 * np.sin(2 * np.pi * (220 + 30 * (seed % 7)) * t) + 0.05 * rng.standard_normal(n)
            f.write(np.stack([tone, np.roll(tone, 7)], axis=1).astype(np.float32))


def decode_seconds(paths: list[Path], settings) -> tuple[float, float]:
    """(wall s, CPU s of this process) to process every file."""
    from shard_tools.audio import TrackTask, process_track

    started, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(paths):
        result = process_track(TrackTask(i, "x", 0, str(path), settings))
        assert not result.skipped, result.reason
    return time.perf_counter() - started, time.process_time() - cpu


def loader_rate(shards: Path) -> tuple[float, int]:
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source

    loader = ShardLoader(resolve_source(shards), LoaderConfig(batch_size=8, read_threads=2))
    started, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch)
    return n / (time.perf_counter() - started), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from shard_tools.audio import ClipSettings
    from shard_tools.build import BuildConfig, build_shards

    work = Path(tempfile.mkdtemp(prefix="fmashard-long-"))
    # a folder per class (two classes: a build needs two), the same audio as 30-s and as 5-minute files
    short = [work / "short" / "ab"[i % 2] / f"{i:03d}.mp3" for i in range(int(args.minutes * 2))]
    long = [work / "long" / "ab"[i % 2] / f"{i:03d}.mp3" for i in range(int(args.minutes / 5))]
    for paths, seconds in ((short, 30.0), (long, 300.0)):
        for i, path in enumerate(paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp3(path, seconds, i)
    for path in short + long:
        path.read_bytes()
    first = ClipSettings(22050, 661500, 27.5)
    every = ClipSettings(22050, 661500, 27.5, long_tracks="all")
    hours = args.minutes / 60
    decode = {"30s_clips_first": [], "5min_tracks_all": []}
    decode_cpu = {"30s_clips_first": [], "5min_tracks_all": []}
    for _ in range(args.rounds):
        for name, paths, settings in (("30s_clips_first", short, first), ("5min_tracks_all", long, every)):
            wall, cpu = decode_seconds(paths, settings)
            decode[name].append(wall / hours)
            decode_cpu[name].append(cpu / hours)
    builds = {}
    for name, folder, mode in (("30s_clips_first", "short", "first"), ("5min_tracks_all", "long", "all")):
        out = work / f"shards-{name}"
        report = build_shards(BuildConfig(corpus=str(work / folder), out=str(out), long_tracks=mode,
                                          split_ratios="100,0,0", workers=1, shard_size="64MB"))
        builds[name] = {"out": out, "tracks": report.tracks_written, "clips": report.clips_written}
    loader = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, build in builds.items():
            rate, n = loader_rate(build["out"])
            assert n == build["clips"]
            loader[name].append(rate)
    result = {
        "command": " ".join(["benchmarks/long_tracks.py", *sys.argv[1:]]), "machine": machine(),
        "method": __doc__.split("Method: ", 1)[1].strip(),
        "audio_minutes_each": args.minutes,
        "decode_seconds_per_audio_hour": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                          for k, v in decode.items()},
        "decode_cpu_seconds_per_audio_hour": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                              for k, v in decode_cpu.items()},
        "long_over_short_decode_cost": statistics.median(decode["5min_tracks_all"])
        / statistics.median(decode["30s_clips_first"]),
        "long_over_short_decode_cpu_best": min(decode_cpu["5min_tracks_all"]) / min(decode_cpu["30s_clips_first"]),
        "builds": {k: {"tracks": v["tracks"], "records": v["clips"]} for k, v in builds.items()},
        "loader_records_per_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                 for k, v in loader.items()},
    }
    out = ROOT / "benchmarks" / "results" / "long_tracks.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("decode_seconds_per_audio_hour", "decode_cpu_seconds_per_audio_hour",
                                             "long_over_short_decode_cost", "long_over_short_decode_cpu_best",
                                             "builds", "loader_records_per_s")}, indent=1))


if __name__ == "__main__":
    main()
