"""`fmashard bench`: every loader over the same tracks end to end, the JSON's fields, the ratio arithmetic,
the loader names and the default loaders."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from fmashard.errors import UserError
from shard_tools.build import BuildConfig, build_shards

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"   # s3_throughput.py, latency_proxy.py
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
    loaders = ["naive-mp3", "naive", "fmashard-host", "fmashard", "raw"]
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
    for name, ref, key in (("fmashard", "naive", "x_naive"), ("fmashard", "naive-mp3", "x_naive_mp3"),
                           ("fmashard-host", "raw", "share_of_raw")):
        row, other = rows[name], rows[ref]
        assert row[key] == pytest.approx(row["tracks_per_s"]["median"] / other["tracks_per_s"]["median"])
        assert row[key + "_paired"] == pytest.approx(statistics.median(
            a / b for a, b in zip(row["tracks_per_s_rounds"], other["tracks_per_s_rounds"])))
        assert row["tracks_per_s"]["median"] == pytest.approx(statistics.median(row["tracks_per_s_rounds"]))
    assert max(rows["raw"]["passes_per_round"]) > 1          # 12 tracks read raw take far less than 0.2 s
    env = report["environment"]
    assert env["machine"]["cores"] and env["machine"]["ram_gb"] > 0 and env["machine"]["cpu"]
    assert env["versions"]["torch"] and "bench" in env["command"] and env["commit"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_unknown_loaders_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fmashard", "bench", "--shards", str(tmp_path),
                           "--loaders", "fmashard,fast"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fast" in lines[0] and "Traceback" not in proc.stderr


def test_a_measurement_repeats_a_short_pass_and_averages_it():
    from fmashard.bench.timing import TimedPass, measure

    calls = []

    def runner():
        calls.append(1)
        return TimedPass(tracks=10, bytes=100, seconds=0.02 * len(calls), first_batch=0.01, cpu_seconds=0.01,
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


def rate_row(loader: str, rates: list[float], workers: int = 0) -> dict:
    return {"loader": loader, "workers": workers, "tracks_per_s": {"median": statistics.median(rates)},
            "tracks_per_s_rounds": rates}


def test_ratios_are_ratios_of_medians_and_paired_the_median_of_per_round_ratios():
    from fmashard.bench.runner import add_ratios

    rows = [rate_row("fmashard", [100, 200, 300]), rate_row("naive", [10, 50, 25]),
            rate_row("naive-mp3", [2, 1, 5]), rate_row("raw", [400, 800, 200]),
            rate_row("fmashard", [90, 90, 90], workers=2)]
    add_ratios(rows)
    fmashard, naive, mp3, raw, other_workers = rows
    assert fmashard["x_naive"] == pytest.approx(8.0)                # 200 / 25
    assert fmashard["x_naive_paired"] == pytest.approx(10.0)        # median(100/10, 200/50, 300/25) = median(10, 4, 12)
    assert fmashard["x_naive_mp3"] == pytest.approx(100.0)          # 200 / 2
    assert fmashard["x_naive_mp3_paired"] == pytest.approx(60.0)    # median(50, 200, 60)
    assert fmashard["share_of_raw"] == pytest.approx(0.5)           # 200 / 400
    assert fmashard["share_of_raw_paired"] == pytest.approx(0.25)   # median(0.25, 0.25, 1.5)
    assert naive["x_naive_mp3"] == pytest.approx(12.5) and naive["x_naive_mp3_paired"] == pytest.approx(5.0)
    assert raw["x_naive"] == pytest.approx(16.0) and "share_of_raw" not in raw   # not against itself
    assert "x_naive" not in naive and "x_naive_mp3" not in mp3
    assert not any(key.startswith(("x_", "share_")) for key in other_workers)    # no naive run at 2 workers


def test_summary_statistics_per_loader():
    from fmashard.bench.runner import LoaderResult, summarize
    from fmashard.bench.timing import TimedPass

    mb = 2**20
    runs = [TimedPass(10, 2_000_000, 0.5, 0.1, 1.0, 3 * mb, 1 * mb),
            TimedPass(10, 2_000_000, 0.25, 0.3, 0.5, 5 * mb, 2 * mb),
            TimedPass(10, 2_000_000, 1.0, 0.2, 2.0, 4 * mb, 4 * mb, passes=3)]
    row = summarize(LoaderResult("fmashard", 0, runs), windows_per_track=7)
    assert row["tracks_per_s"] == {"median": 20.0, "min": 10.0, "max": 40.0}
    assert row["windows_per_s"]["median"] == 140.0 and row["mb_per_s"]["median"] == pytest.approx(4.0)
    assert row["first_batch_s"]["median"] == pytest.approx(0.2)
    assert row["cpu_s_per_track"] == pytest.approx({"median": 0.1, "min": 0.05, "max": 0.2})
    assert row["peak_rss_mb"]["median"] == 4.0 and row["rss_added_mb"]["max"] == 4.0
    assert row["tracks_per_s_rounds"] == [20.0, 40.0, 10.0] and row["passes_per_round"] == [1, 1, 3]


def test_every_loader_name_has_a_runner():
    from fmashard.bench.config import ALIASES, DEFAULT_LOADERS, LOADERS
    from fmashard.bench.loaders import RUNNERS

    assert set(RUNNERS) == set(LOADERS) and set(DEFAULT_LOADERS) <= set(LOADERS)
    assert set(ALIASES.values()) <= set(LOADERS) and not set(ALIASES) & set(LOADERS)


def test_old_loader_names_are_aliases_with_a_note():
    from fmashard.bench.config import BenchConfig, resolve_loaders

    loaders, notes = resolve_loaders(BenchConfig(shards="s", loaders=("wds-host", "raw", "wds", "wds-host-crc")))
    assert loaders == ("fmashard-host", "raw", "fmashard", "fmashard-host-crc")
    assert len(notes) == 1 and "wds-host, wds, wds-host-crc" in notes[0] and "fmashard-host" in notes[0]
    assert resolve_loaders(BenchConfig(shards="s", loaders=("fmashard", "raw"))) == (("fmashard", "raw"), [])


def test_the_default_loaders_leave_naive_mp3_out_without_fma_dir():
    from fmashard.bench.config import DEFAULT_LOADERS, BenchConfig, resolve_loaders

    loaders, notes = resolve_loaders(BenchConfig(shards="s", naive="f"))
    assert loaders == tuple(n for n in DEFAULT_LOADERS if n != "naive-mp3") and "naive-mp3" in DEFAULT_LOADERS
    assert len(notes) == 1 and "naive-mp3" in notes[0] and "--fma-dir" in notes[0]
    assert resolve_loaders(BenchConfig(shards="s", naive="f", fma_dir="fma")) == (DEFAULT_LOADERS, [])


def test_naive_mp3_asked_for_without_fma_dir_is_a_user_error(tmp_path):
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.loaders import make_runners
    from synth_shards import write_synthetic_shards

    write_synthetic_shards(tmp_path, [2], clip_samples=1000)
    with pytest.raises(UserError, match="naive-mp3 needs --fma-dir"):
        make_runners(BenchConfig(shards=str(tmp_path), loaders=("naive-mp3",)))
    with pytest.raises(UserError, match="unknown fast"):
        BenchConfig(shards=str(tmp_path), loaders=("raw", "fast"))


@pytest.fixture(scope="module")
def full_length(tmp_path_factory):
    """A 4-track build of 30-s clips (what the default windows need) and its `--layout files` twin."""
    from s3_server import write_files_layout
    from synth_shards import VOCAB, write_synthetic_shards

    root = tmp_path_factory.mktemp("full-length")
    truth = write_synthetic_shards(root / "shards", [2, 2], clip_samples=661_500)
    write_files_layout(root / "files", truth, VOCAB, 661_500)
    return root


def test_bench_with_naive_and_without_fma_dir_runs_its_default_loaders(full_length, tmp_path):
    json_path = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "fmashard", "bench", "--shards", str(full_length / "shards"),
                           "--naive", str(full_length / "files"), "--rounds", "1", "--min-seconds", "0",
                           "--device", "cpu", "--json", str(json_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if "naive-mp3" in ln] == [
        "naive-mp3 left out of the default loaders: it needs --fma-dir (the FMA folder the shards were built from)"]
    report = json.loads(json_path.read_text())
    assert report["config"]["loaders"] == ["naive", "fmashard-host", "fmashard", "raw"]
    assert [r["loader"] for r in report["results"]] == ["naive", "fmashard-host", "fmashard", "raw"]
    assert {r["tracks"] for r in report["results"]} == {4}


def test_old_names_run_under_their_new_names(full_length):
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.runner import run_bench

    logs = []
    report = run_bench(BenchConfig(shards=str(full_length / "shards"), loaders=("wds-host", "raw"), rounds=1,
                                   min_seconds=0, device="cpu"), log=logs.append)
    assert [r["loader"] for r in report["results"]] == ["fmashard-host", "raw"]
    assert report["config"]["loaders"] == ["fmashard-host", "raw"]
    assert logs[0] == "--loaders wds-host: now called fmashard-host (the old names go in the next release)"


def test_logmel_loaders_give_the_same_features_for_the_same_track(full_length):
    """fmashard-logmel (shards, features on the device) and naive-logmel (.pt files, the mel on the CPU in
    `__getitem__`) deliver the same (1, 128, 216) features per window, equal for the same track."""
    import torch

    from fmashard.bench.naive import NaiveLogMelDataset
    from fmashard.data.device import DeviceFeeder
    from fmashard.data.features import make_features
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source

    naive = NaiveLogMelDataset(str(full_length / "files"))
    by_track = {entry["track_id"]: i for i, entry in enumerate(naive.files)}
    spec = resolve_source(str(full_length / "shards"))
    loader = ShardLoader(spec, LoaderConfig(batch_size=2, num_workers=0, seed=0))
    batch = next(iter(DeviceFeeder(loader, torch.device("cpu"), features=make_features("logmel"))))
    assert batch.windows.shape == (2 * 7, 1, 128, 216)
    track = int(batch.track_ids[0])
    windows, label = naive[by_track[track]]
    assert len(windows) == 7 and {tuple(w.shape) for w in windows} == {(1, 128, 216)}
    assert int(label.argmax()) == int(batch.labels[0])
    mine = batch.windows[batch.track_ids == track]
    torch.testing.assert_close(torch.stack(windows), mine, atol=1e-3, rtol=1e-4)   # dB: float32 FFT noise


def test_logmel_loaders_run_side_by_side_with_the_device_named(full_length):
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.runner import run_bench

    report = run_bench(BenchConfig(shards=str(full_length / "shards"), naive=str(full_length / "files"),
                                   loaders=("fmashard-logmel", "naive-logmel"), rounds=1, min_seconds=0,
                                   device="cpu", max_tracks=2, batch_size=2), log=lambda _: None)
    rows = {r["loader"]: r for r in report["results"]}
    assert set(rows) == {"fmashard-logmel", "naive-logmel"} and {r["tracks"] for r in rows.values()} == {2}
    assert rows["fmashard-logmel"]["windows_per_s"]["median"] == pytest.approx(
        7 * rows["fmashard-logmel"]["tracks_per_s"]["median"])
    assert rows["fmashard-logmel"]["x_naive_logmel"] == pytest.approx(
        rows["fmashard-logmel"]["tracks_per_s"]["median"] / rows["naive-logmel"]["tracks_per_s"]["median"])
    assert "x_naive" not in rows["fmashard-logmel"]        # log-mel is compared with log-mel only
    assert "device: cpu" in report["method"] and "no GPU" in report["method"]


def test_naive_logmel_needs_the_files_build():
    from fmashard.bench.config import BenchConfig

    with pytest.raises(UserError, match="naive-logmel needs --naive"):
        BenchConfig(shards="s", loaders=("naive-logmel",))


def test_s3_bench_mulaw8_shards_hold_the_same_tracks(tmp_path, monkeypatch):
    """benchmarks/s3_throughput.py's mulaw8 shards: the pcm16 shards' tracks, same order, within mu-law's bound."""
    import numpy as np
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import s3_throughput
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source
    from fmashard.data.windows import decode
    from fmashard.format.codecs import mulaw8_error_bound
    from synth_shards import write_synthetic_shards

    truth = write_synthetic_shards(tmp_path / "pcm16", [3, 2], clip_samples=4000)
    s3_throughput.write_codec_shards(tmp_path / "mulaw8", tmp_path / "pcm16", truth, "mulaw8")
    spec = resolve_source(str(tmp_path / "mulaw8"))
    assert spec.num_samples == 5 and spec.record_bytes < 0.7 * resolve_source(str(tmp_path / "pcm16")).record_bytes
    seen = 0
    for batch in ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False)):
        assert batch.audio.dtype == torch.uint8
        for row, track_id in zip(decode(batch.audio), batch.track_ids.tolist()):
            x = truth[track_id][0].astype(np.float32) / 32768.0
            assert np.all(np.abs(row.numpy() - x) <= mulaw8_error_bound(x) + 1e-7)
            seen += 1
    assert seen == 5


def test_latency_proxy_link_cap_sets_the_transfer_time(monkeypatch):
    import http.server
    import socketserver
    import threading
    import time
    import urllib.request

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from latency_proxy import LatencyProxy

    body = b"x" * (2 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with LatencyProxy(server.server_address, 0.0, rate=8e6) as proxy:   # 2 MiB at 8 MB/s: >= 0.26 s
            began = time.perf_counter()
            assert len(urllib.request.urlopen(proxy.url, timeout=30).read()) == len(body)
            assert time.perf_counter() - began >= 0.9 * (len(body) - (1 << 20)) / 8e6   # the last 1-MB chunk: free
    finally:
        server.shutdown()


def test_raw_is_a_plain_read_loop_of_the_tracks_bytes_into_one_reused_buffer(tmp_path, monkeypatch):
    """raw reads each shard up to the limit's records and not a byte more, with one buffer for all passes."""
    import io

    from fmashard.bench import loaders
    from fmashard.data.sources import resolve_source
    from synth_shards import write_synthetic_shards

    assert loaders.read_exactly(io.BytesIO(bytes(100)), memoryview(bytearray(7)), 45) == 45
    assert loaders.read_exactly(io.BytesIO(bytes(30)), memoryview(bytearray(7)), 45) == 30
    write_synthetic_shards(tmp_path, [3, 4], clip_samples=500)
    spec = resolve_source(tmp_path)
    got = []
    real = loaders.read_exactly
    monkeypatch.setattr(loaders, "read_exactly", lambda f, buf, n: got.append((id(buf), real(f, buf, n))) or n)
    raw = loaders.RawPass(spec, limit=5)
    first, second = raw(), raw()
    assert first.tracks == second.tracks == 5
    assert [n for _, n in got] == [3 * spec.record_bytes, 2 * spec.record_bytes] * 2
    assert len({b for b, _ in got}) == 1
    size, why = loaders.raw_read_size()
    assert 64 << 10 <= size <= 1 << 20 and "KiB" in why
