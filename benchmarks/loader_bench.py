"""Regenerate the README's loader results from scratch.

    .venv/bin/python benchmarks/loader_bench.py [--fma-dir DIR] [--work DIR] [--rounds 5] [--workers 0]

Without --fma-dir a demo corpus of 8 genres x 64 tracks (real MP3s; ~410 training tracks after the
build's skips) is generated into --work (default /tmp/fmashard-bench; reused when present).  Then
`fmashard build` (shards and the notebook's .pt layout) and `fmashard bench` over the training split
with every loader, interleaved rounds after a warm-up, page cache warm.  Writes
benchmarks/results/loader_bench.json, loader_bench.png and loader_bench.md, and replaces the table
between the bench markers in README.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def fmashard(*args: str) -> None:
    run(str(Path(sys.executable).parent / "fmashard"), *args)


def prepare(work: Path, fma_dir: str | None) -> tuple[Path, Path, Path]:
    fma = Path(fma_dir) if fma_dir else work / "fma"
    if not fma_dir and not (fma / "fma_metadata" / "tracks.csv").exists():
        fmashard("demo-data", str(fma), "--genres", "8", "--tracks-per-genre", "64")
    for layout in ("shards", "files"):
        fmashard("build", "--fma-dir", str(fma), "--out", str(work / layout), "--layout", layout)
    return fma, work / "shards", work / "files"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.1f}× ({row[key + '_paired']:.1f}×)" if key in row else "—"


def markdown(report: dict) -> str:
    rows = report["results"]
    env = report["environment"]
    lines = ["| loader | what it delivers | tracks/s median (min–max) | windows/s | × naive | × naive-mp3 "
             "| of raw read |", "|---|---|---|---|---|---|---|"]
    what = {"raw": "raw bytes (physical limit)", "fmashard-host": "(B, N) int16 batch buffer",
            "fmashard": "(B·7, 1, 110250) float windows", "dali": "(B·7, 1, 110250) float windows",
            "naive": "7 float windows per track (lists)", "naive-mp3": "7 float windows per track (lists)"}
    for r in rows:
        t = r["tracks_per_s"]
        share = f"{r['share_of_raw']:.0%} ({r['share_of_raw_paired']:.0%})" if "share_of_raw" in r else "—"
        lines.append(f"| `{r['loader']}` ({r['workers']}w) | {what.get(r['loader'], '')} | "
                     f"{t['median']:.0f} ({t['min']:.0f}–{t['max']:.0f}) | {r['windows_per_s']['median']:.0f} | "
                     f"{_ratio(r, 'x_naive')} | {_ratio(r, 'x_naive_mp3')} | {share} |")
    m = env["machine"]
    lines.append("")
    lines.append(f"Method: {rows[0]['tracks']} tracks of the training split, batch {report['config']['batch_size']}, "
                 f"{report['config']['rounds']} interleaved rounds after a warm-up round (in each, a loader repeats "
                 f"its pass until {report['config'].get('min_seconds', 0):g} s have passed), page cache warm; "
                 f"ratios of medians (paired: median of the per-round ratios), "
                 f"torch threads {env.get('torch_threads')}; {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB, "
                 f"no GPU (device-side steps on the CPU); commit `{env['commit']}`; "
                 f"command `{env['command']}`.")
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{table}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fma-dir")
    parser.add_argument("--work", default="/tmp/fmashard-bench")
    parser.add_argument("--rounds", default="5")
    parser.add_argument("--workers", default="0")
    parser.add_argument("--loaders", default="naive-mp3,naive,fmashard-host,fmashard,dali,raw")
    args = parser.parse_args()
    work = Path(args.work)
    fma, shards, files = prepare(work, args.fma_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    fmashard("bench", "--shards", str(shards), "--naive", str(files), "--fma-dir", str(fma),
             "--loaders", args.loaders, "--workers", args.workers, "--rounds", args.rounds,
             "--json", str(RESULTS / "loader_bench.json"), "--plot", str(RESULTS / "loader_bench.png"))
    report = json.loads((RESULTS / "loader_bench.json").read_text())
    table = markdown(report)
    (RESULTS / "loader_bench.md").write_text(table)
    update_readme(table)
    print(table)


if __name__ == "__main__":
    main()
