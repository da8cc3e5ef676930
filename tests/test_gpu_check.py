"""benchmarks/gpu_check.py keeps working: `--device cpu --tiny` writes both files with every part, and it
runs with only the modules a GPU machine has (soundfile, soxr, boto3, webdataset, DALI, matplotlib, pandas,
typer and torchaudio are made unimportable).  Its figures are not recorded anywhere."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
ABSENT = ("soundfile", "soxr", "boto3", "botocore", "webdataset", "nvidia", "matplotlib", "pandas", "typer",
          "torchaudio")
PARTS = ("environment", "config", "data", "host_path", "device_path", "naive", "training", "syncs", "memory")


def run_script(*args: str, absent=ABSENT) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter in which importing any of `absent` fails (as on the GPU machine)."""
    blocker = (
        "import importlib.abc, importlib.util, runpy, sys\n"
        f"ABSENT = {tuple(absent)!r}\n"
        "class Absent(importlib.abc.MetaPathFinder):   # `import x` fails\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ABSENT:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "real_find_spec = importlib.util.find_spec   # and find_spec says None, as for a module not installed\n"
        "importlib.util.find_spec = lambda name, package=None: (None if name.split('.')[0] in ABSENT\n"
        "                                                       else real_find_spec(name, package))\n"
        f"sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tiny_cpu_run_writes_the_json_and_the_table(tmp_path):
    result = run_script("--device", "cpu", "--tiny", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert set(PARTS) <= set(report)
    assert not [k for k in PARTS if isinstance(report[k], dict) and ("error" in report[k] or "skipped" in report[k])]
    env = report["environment"]
    assert {"gpu", "torch", "cpu_count", "commit"} <= set(env) and {"name", "driver"} <= set(env["gpu"])
    host = report["host_path"]
    assert host["raw"]["loader"] == "raw" and host["raw"]["tracks"] == 8
    assert {(r["read_threads"], r["workers"]) for r in host["rows"]} == {(2, 0), (2, 2)}
    for row in host["rows"] + report["device_path"]["rows"] + report["naive"]["rows"]:
        assert row["tracks"] == 8 and set(row["tracks_per_s"]) == {"median", "min", "max"}
        assert row["cpu_s_per_track"]["median"] > 0 and row["peak_rss_mb"]["median"] > 0
    assert report["device_path"]["per_batch"]["decode_windows_ms"] > 0
    assert report["naive"]["fmashard_best_over_naive_best"] > 0
    models = report["training"]["models"]
    assert [m["model"] for m in models] == ["resnet1d", "soundnet", "soundnet-large"]
    assert all(m["real_windows_per_s"]["median"] > 0 and m["ratio"] > 0 for m in models)
    syncs = report["syncs"]
    assert syncs["steps"] == 2 and syncs["measured"] is False and "CUDA" in syncs["reason"]
    assert report["memory"]["peak_rss_mb"] > 0
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    for heading in ("# gpu_check", "## 1. Raw read and host path", "## 2. Full path to float windows",
                    "## 3. Naive loader", "## 4. Training throughput", "## 5. Host-device synchronisations",
                    "## 6. Memory"):
        assert heading in table, heading
    assert "| fmashard-host | read_threads 2, workers 2 |" in table and "| soundnet-large | fp32 |" in table
    work = next(line.split("data in ")[1] for line in result.stdout.splitlines() if "data in " in line)
    assert "fmashard-gpu-check-" in work and not Path(work).exists()   # its data is removed afterwards


def test_a_missing_module_is_one_line_naming_it(tmp_path):
    result = run_script("--device", "cpu", "--tiny", "--out", str(tmp_path), absent=ABSENT + ("psutil",))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and "psutil" in result.stderr
    assert result.stderr.startswith("error: gpu_check needs psutil") and "Traceback" not in result.stderr
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_asking_for_cuda_without_it_is_a_user_error(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    result = run_script("--device", "cuda", "--tiny", "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: --device cuda"), result.stderr
