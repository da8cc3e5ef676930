"""`fmashard bench` end to end on a tiny corpus: every loader, the JSON's fields, the same tracks."""
import json
import subprocess
import sys

import pytest

from shard_tools.build import BuildConfig, build_shards

FIELDS = ("tracks_per_s", "windows_per_s", "mb_per_s", "first_batch_s", "cpu_s_per_track", "peak_rss_mb",
          "rss_added_mb")


@pytest.fixture(scope="module")
def builds(demo_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    for layout in ("shards", "files"):
        build_shards(BuildConfig(fma_dir=demo_corpus, out=out / layout, layout=layout, workers=2,
                                 shard_size="8MB"))
    return demo_corpus, out


@pytest.mark.slow
def test_bench_command_reports_every_loader_over_the_same_tracks(builds, tmp_path):
    fma, out = builds
    loaders = ["naive-mp3", "naive", "wds-host", "wds", "raw"]
    try:
        import nvidia.dali  # noqa: F401
        loaders.append("dali")
    except ImportError:
        pass
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = subprocess.run([sys.executable, "-m", "fmashard", "bench", "--shards", str(out / "shards"),
                           "--naive", str(out / "files"), "--fma-dir", str(fma), "--loaders", ",".join(loaders),
                           "--rounds", "2", "--max-tracks", "12", "--batch-size", "4", "--min-seconds", "0.2",
                           "--json", str(json_path), "--plot", str(png_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fmashard bench" in proc.stdout and "× naive" in proc.stdout
    report = json.loads(json_path.read_text())
    rows = {r["loader"]: r for r in report["results"]}
    assert set(rows) == set(loaders)
    assert {r["tracks"] for r in rows.values()} == {12}          # every loader saw the same tracks
    for row in rows.values():
        assert row["rounds"] == 2
        for field in FIELDS:
            stat = row[field]
            assert stat["min"] <= stat["median"] <= stat["max"]
        assert row["tracks_per_s"]["median"] > 0
    assert rows["wds"]["x_naive"] > 0 and rows["wds"]["x_naive_mp3"] > 0 and 0 < rows["wds-host"]["share_of_raw"]
    assert rows["wds"]["x_naive_paired"] > 0 and 0 < rows["wds-host"]["share_of_raw_paired"]
    assert max(rows["raw"]["passes_per_round"]) > 1          # 12 tracks read raw take far less than 0.2 s
    env = report["environment"]
    assert env["machine"]["cores"] and env["machine"]["ram_gb"] > 0 and env["machine"]["cpu"]
    assert env["versions"]["torch"] and "bench" in env["command"] and env["commit"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_unknown_loaders_in_one_line(builds):
    _, out = builds
    proc = subprocess.run([sys.executable, "-m", "fmashard", "bench", "--shards", str(out / "shards"),
                           "--loaders", "wds,fast"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fast" in lines[0] and "Traceback" not in proc.stderr


def test_a_measurement_repeats_a_short_pass_and_averages_it():
    from fmashard.bench.runner import Run, measure

    calls = []

    def runner():
        calls.append(1)
        return Run(tracks=10, bytes=100, seconds=0.02 * len(calls), first_batch=0.01, cpu_seconds=0.01,
                   peak_rss=len(calls), rss_added=1)
    run = measure(runner, min_seconds=0.1)
    assert run.passes == len(calls) == 3                   # 0.02 + 0.04 + 0.06 >= 0.1
    assert run.seconds == pytest.approx(0.04) and run.tracks == 10 and run.peak_rss == 3


def test_plot_is_written_where_the_command_says_it_is(tmp_path):
    from synth_shards import write_synthetic_shards

    write_synthetic_shards(tmp_path / "shards", [3, 2], clip_samples=1000)
    chart = tmp_path / "chart"                     # no extension: matplotlib would append .png
    proc = subprocess.run([sys.executable, "-m", "fmashard", "bench", "--shards", str(tmp_path / "shards"),
                           "--loaders", "raw", "--rounds", "1", "--min-seconds", "0", "--plot", str(chart)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {chart}" in proc.stdout.splitlines()
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not chart.with_suffix(".png").exists()
