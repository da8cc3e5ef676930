"""Codecs side by side (issue 16): pcm16 vs mulaw8 shards of the same tracks — bytes per track, the
loader's host path and full path, and the validation accuracy of the same training run on each.

    .venv/bin/python benchmarks/codec_compare.py [--work /tmp/fmashard-bench] [--demo /tmp/codec16] [--rounds 5]

Method: `--work` holds the pcm16 shards of a demo corpus (`WORK/shards`, as `loader_bench.py` leaves them;
`WORK/fma` is built again with `--codec mulaw8` into `WORK/shards-mulaw8` when missing).  Bytes: each
build's manifest (audio member, record, all shard bytes / tracks).  Loader: `fmashard-host` (shard bytes ->
collated (B, N) batch) and `fmashard` (the same + decode and windows on the device -> (B*7, 1, 110,250)
float32) of `fmashard.bench`, over the training split of each build, batch 8, workers 0; one warm-up
round, then `--rounds` rounds, the two codecs alternated round by round (pcm16 first in odd rounds, mulaw8
first in even ones); in each round a loader repeats its pass until `--min-seconds` have passed; tracks/s
min/median/max.  On a machine without a GPU the device is the CPU (decode: pcm16 a converting copy and a
scale, mulaw8 one 256-entry gather).  Training: `fmashard train` on pcm16 and mulaw8 builds of the same
`--demo` corpus (`fmashard demo-data --genres 4 --tracks-per-genre 16`, generated when missing) with the
same flags (`--train-flags`) and seed; validation track accuracy (majority vote over a track's windows)
after each epoch, from each run's metrics.jsonl.  SNR: quoted from results/codec_fidelity.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from fmashard.bench.config import BenchConfig  # noqa: E402
from fmashard.bench.loaders import make_runners  # noqa: E402
from fmashard.bench.report import commit, environment  # noqa: E402
from fmashard.bench.runner import summarize  # noqa: E402
from fmashard.bench.timing import measure  # noqa: E402

CODECS = ("pcm16", "mulaw8")
LOADERS = ("fmashard-host", "fmashard")
TRAIN_FLAGS = "--model resnet1d --window-seconds 1 --epochs 3 --batch-size 8 --seed 0 --device cpu"


def fmashard(*args: str, log: Path | None = None) -> None:
    cmd = [str(Path(sys.executable).parent / "fmashard"), *args]
    print("+", shlex.join(cmd), flush=True)
    with open(log or os.devnull, "w") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)


def build(fma: Path, out: Path, codec: str) -> Path:
    if not (out / "manifest.json").exists():
        fmashard("build", "--fma-dir", str(fma), "--out", str(out), "--codec", codec)
    return out


def bytes_per_track(shards: Path) -> dict:
    manifest = json.loads((shards / "manifest.json").read_text())
    tracks = sum(s["num_samples"] for s in manifest["splits"].values())
    return {"codec": manifest["codec"], "audio_member_bytes": manifest["sample_bytes"],
            "record_bytes": manifest["record_bytes"], "tracks": tracks,
            "shard_bytes_per_track": round(manifest["totals"]["bytes"] / tracks)}


def split_tracks(shards: Path, split: str) -> int:
    return json.loads((shards / "manifest.json").read_text())["splits"][split]["num_samples"]


def loader_rounds(builds: dict[str, Path], rounds: int, min_seconds: float) -> dict:
    """{codec: {loader: summary}}: the codecs alternated round by round (ABBA...), round 0 a warm-up."""
    runners = {codec: make_runners(BenchConfig(shards=str(path), loaders=LOADERS, rounds=rounds, device="cpu",
                                               min_seconds=min_seconds))
               for codec, path in builds.items()}
    runs = {(codec, name): [] for codec in builds for name in LOADERS}
    for round_index in range(rounds + 1):
        order = list(builds) if round_index % 2 else list(builds)[::-1]
        for codec in order:
            for (name, _workers), runner in runners[codec].items():
                run = measure(runner, min_seconds)
                if round_index:
                    runs[codec, name].append(run)
                print(f"round {round_index} {codec:>6} {name:>14}: {run.tracks / run.seconds:7.1f} tracks/s"
                      f"{' (warm-up)' if not round_index else ''}", flush=True)
    from fmashard.bench.runner import LoaderResult

    return {codec: {name: summarize(LoaderResult(name, 0, runs[codec, name]), 7) for name in LOADERS}
            for codec in builds}


def train_runs(demo: Path, flags: str) -> dict:
    """The same `fmashard train` on each codec's build of the demo corpus; validation track accuracy by epoch."""
    fma = demo / "demo4x16"
    if not (fma / "fma_metadata" / "tracks.csv").exists():
        fmashard("demo-data", str(fma), "--genres", "4", "--tracks-per-genre", "16")
    out = {}
    for codec in CODECS:
        shards = build(fma, demo / f"demo-{codec}", codec)
        run_dir = demo / f"train-{codec}"
        started = time.perf_counter()
        fmashard("train", "--shards", str(shards), "--out", str(run_dir), *shlex.split(flags),
                 log=demo / f"train-{codec}.log")
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        epochs = [e for e in epochs if "val_track_acc_vote" in e]
        out[codec] = {"val_track_acc_vote": [round(e["val_track_acc_vote"], 4) for e in epochs],
                      "val_track_acc_mean": [round(e["val_track_acc_mean"], 4) for e in epochs],
                      "val_loss": [round(e["val_loss"], 4) for e in epochs],
                      "val_tracks": epochs[-1].get("val_tracks") if epochs else None,
                      "train_tracks": split_tracks(shards, "training"),
                      "seconds": round(time.perf_counter() - started)}
    out["command"] = f"fmashard train --shards DEMO/demo-CODEC --out DEMO/train-CODEC {flags}"
    return out


def fidelity() -> dict:
    path = ROOT / "benchmarks/results/codec_fidelity.json"
    if not path.exists():
        return {}
    clips = json.loads(path.read_text())["clips"]
    snr = [c["snr_db_mulaw8"] for c in clips]
    real = [c for c in clips if c["clip"].startswith("real")]
    pcm16 = [c["snr_db_pcm16"] for c in clips]
    return {"from": "results/codec_fidelity.json", "snr_db_mulaw8": {"min": min(snr), "max": max(snr)},
            "snr_db_pcm16": {"min": min(pcm16), "max": max(pcm16)},
            "real_clip": real[0] if real else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/fmashard-bench")
    parser.add_argument("--demo", default="/tmp/codec16", help="folder for the 4x16 training corpus and runs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--train-flags", default=TRAIN_FLAGS)
    parser.add_argument("--parts", default="bytes,loader,train", help="comma list of bytes, loader, train")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/codec_compare.json"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    work = Path(args.work)
    builds = {"pcm16": work / "shards", "mulaw8": build(work / "fma", work / "shards-mulaw8", "mulaw8")}
    env = environment()
    run = {"command": "python benchmarks/codec_compare.py " + shlex.join(sys.argv[1:]), "commit": commit(),
           "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    parts_out = {}
    if "bytes" in parts:
        parts_out["bytes_per_track"] = {codec: bytes_per_track(p) for codec, p in builds.items()}
    if "loader" in parts:
        loader = loader_rounds(builds, args.rounds, args.min_seconds)
        for name in LOADERS:
            rows = [loader[c][name]["tracks_per_s_rounds"] for c in CODECS]
            loader[f"{name}_mulaw8_vs_pcm16_paired"] = round(statistics.median(m / p for p, m in zip(*rows)), 3)
        parts_out["loader_tracks_per_s"] = loader
    if "train" in parts:
        parts_out["training"] = train_runs(Path(args.demo), args.train_flags)
    # each part keeps the run that measured it: parts may be measured by separate runs of this script
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update({"machine": env["machine"], "versions": env["versions"], "torch_threads": env["torch_threads"],
                   "method": " ".join(__doc__.split("\n\n")[2].split()), "snr": fidelity()})
    report.setdefault("runs", {})
    for key, value in parts_out.items():
        report[key] = value
        report["runs"][key] = run
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("bytes_per_track", "training") if k in report}, indent=1))
    for codec in CODECS:
        for name in LOADERS:
            stat = report.get("loader_tracks_per_s", {}).get(codec, {}).get(name)
            if stat:
                t = stat["tracks_per_s"]
                print(f"{codec:>6} {name:>14}: {t['median']:.0f} ({t['min']:.0f}-{t['max']:.0f}) tracks/s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
