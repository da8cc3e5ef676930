"""`fmashard bench` output: the terminal table, the JSON record (machine, versions, commit, command)
and the bar chart."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "numpy", "soundfile", "soxr", "boto3", "nvidia-dali-cuda120")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str | None:
    """HEAD's commit, with -dirty when tracked files differ from it (None outside a git checkout)."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import psutil
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit(),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
    }


def method_line(report: dict, device) -> str:
    """How the figures were taken, and where the device stage ran (on a machine without a GPU the device
    is the CPU: decode, windows and log-mel then share its cores with the reads)."""
    config, machine = report["config"], report["environment"]["machine"]
    if device.type == "cpu":
        where = (f"device: cpu — no GPU used: fmashard's device stage (decode, windows, log-mel) ran on this CPU "
                 f"({machine['cores']} cores), sharing them with the reads")
    else:
        where = f"device: {device} ({machine['gpu']})"
    return (f"{report['results'][0]['tracks']} tracks of the {config['split']} split, batch {config['batch_size']}, "
            f"{config['rounds']} interleaved rounds after a warm-up (in each a loader repeats its pass until "
            f"{config['min_seconds']:g} s have passed); torch threads {report['environment']['torch_threads']}; "
            f"{where}" + "".join(f"; {report[key]}" for key in ("raw_read", "read_threads") if key in report))


def fmt(stat: dict, digits: int = 0) -> str:
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "—"


def _median(row: dict, key: str, digits: int = 0) -> str:
    return f"{row[key]['median']:.{digits}f}"


def print_table(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(150, Console().width))
    table = Table(title=f"fmashard bench — {report['results'][0]['tracks']} tracks, "
                        f"{report['config']['rounds']} rounds after a warm-up; medians (tracks/s: min–max)")
    for col in ("loader", "workers", "tracks/s", "windows/s", "MB/s", "1st batch s", "CPU ms/track",
                "main CPU ms", "RSS added MB", "× naive", "× naive-mp3", "× naive-logmel", "of raw"):
        table.add_column(col, justify="left" if col == "loader" else "right")
    for row in report["results"]:
        table.add_row(row["loader"], str(row["workers"]), fmt(row["tracks_per_s"]), _median(row, "windows_per_s"),
                      _median(row, "mb_per_s"), _median(row, "first_batch_s", 3),
                      f"{row['cpu_s_per_track']['median'] * 1e3:.2f}",
                      f"{row.get('main_cpu_s_per_track', row['cpu_s_per_track'])['median'] * 1e3:.2f}",
                      _median(row, "rss_added_mb"),
                      _ratio(row, "x_naive"), _ratio(row, "x_naive_mp3"), _ratio(row, "x_naive_logmel"),
                      f"{row['share_of_raw']:.0%}" if "share_of_raw" in row else "—")
    console.print(table)
    model = report.get("model")
    if model:
        console.print(f"model {model['model']} ({model['precision']}): real data {model['real_windows_per_s']:.1f} "
                      f"windows/s, synthetic on-device {model['synthetic_windows_per_s']:.1f} windows/s, "
                      f"ratio {model['ratio']:.1%}")
    if "method" in report:
        console.print(f"method: {report['method']}")
    env = report["environment"]
    console.print(f"machine: {env['machine']['cpu']}, {env['machine']['cores']} cores, "
                  f"{env['machine']['ram_gb']} GB; commit {env['commit']}; command: {env['command']}")


def plot(report: dict, path: str) -> str:
    """Write the bar chart to exactly `path` (PNG unless its extension names another format matplotlib
    writes, such as .svg or .pdf); returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    labels = [f"{r['loader']}\n{r['workers']}w" for r in rows]
    medians = [r["tracks_per_s"]["median"] for r in rows]
    lows = [m - r["tracks_per_s"]["min"] for m, r in zip(medians, rows)]
    highs = [r["tracks_per_s"]["max"] - m for m, r in zip(medians, rows)]
    colors = ["#999999" if r["loader"] == "raw" else "#d62728" if r["loader"].startswith("naive") else "#1f77b4"
              for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4.5))
    ax.bar(labels, medians, yerr=[lows, highs], color=colors, capsize=4)
    for x, (m, r) in enumerate(zip(medians, rows)):
        note = f"{r['x_naive']:.1f}× naive" if "x_naive" in r else ""
        ax.text(x, m, f"{m:.0f}\n{note}", ha="center", va="bottom", fontsize=8)
    env = report["environment"]["machine"]
    ax.set_ylabel("tracks / s (median, min–max)")
    ax.set_title(f"fmashard bench: {rows[0]['tracks']} tracks, {report['config']['rounds']} rounds\n"
                 f"{env['cpu']}, {env['cores']} cores", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower()
    fig.savefig(path, dpi=110, format=fmt if fmt in fig.canvas.get_supported_filetypes() else "png")
    plt.close(fig)
    return str(path)
