"""Build engines (shard_tools.engines): one task per shard, run in this process, a local process pool or a real
local Ray (2 CPUs, started here), give the same bytes; a Ray worker SIGKILLed mid-task is retried and the build
still ends identical; a driver SIGKILLed mid-build resumes with its finished shards; a build to s3:// works
through Ray (the workers get the driver's AWS settings), and a bucket gone mid-build is a one-line error."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fmashard.errors import UserError
from shard_tools.build import BuildConfig, build_shards
from shard_tools.verify import verify_build
from tests.test_corpus import write_audio, write_table

SHORT = dict(clip_seconds=1.0, min_seconds=0.5, shard_size="100KB")   # 2 tracks of 44 KB per shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 short tracks (two rates, three formats) plus one too short and one missing: 13+ shards."""
    root, rows = tmp_path_factory.mktemp("engines"), []
    for i in range(24):
        rel = f"a/{i:02d}.{('wav', 'flac', 'ogg')[i % 3]}"
        write_audio(root / rel, 1.0 + 0.4 * (i % 4), seed=i, rate=(22050, 44100)[i % 2], freq=220.0 + 20 * i)
        rows.append({"path": rel, "label": ("x", "y", "z")[i % 3]})
    write_audio(root / "a/short.wav", 0.2, seed=99)
    rows += [{"path": "a/short.wav", "label": "x"}, {"path": "a/missing.wav", "label": "y"}]
    return write_table(root / "tracks.csv", rows)


def built_files(out: Path) -> dict[str, str]:
    """sha256 of every published file (the journal carries the build id, a uuid, so it is left out)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".fmashard" not in p.as_posix()
            and ".tmp-" not in p.name}


def build(corpus: Path, out: Path, **kw):
    return build_shards(BuildConfig(corpus=str(corpus), out=str(out), **{**SHORT, **kw}))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("ref") / "out"
    report = build(corpus, out, workers=1)
    assert report.shards_built >= 8 and report.tracks_skipped == 2
    files = built_files(out)
    assert "manifest.json" in files and sum(f.endswith(".tar") for f in files) == report.shards_built - 0
    return files


def test_local_shard_pool_gives_the_in_process_bytes(corpus, reference, tmp_path, monkeypatch):
    from shard_tools import engines

    monkeypatch.setattr(engines, "SHARDS_PER_WORKER", 2)   # >= 2 shards per worker: one pool task per shard
    report = build(corpus, tmp_path / "out", workers=2)
    assert report.workers == 2 and built_files(tmp_path / "out") == reference


def test_local_track_pool_for_few_shards_gives_the_same_bytes(corpus, tmp_path):
    """Few shards per worker: the pool decodes tracks, this process writes the shards."""
    big = dict(shard_size="4MB")
    one = build(corpus, tmp_path / "one", workers=1, **big)
    two = build(corpus, tmp_path / "two", workers=2, **big)
    assert one.shards_built == two.shards_built <= 3
    assert built_files(tmp_path / "one") == built_files(tmp_path / "two")


def test_engine_and_address_are_not_identity_and_are_checked(corpus, tmp_path):
    local = BuildConfig(corpus=str(corpus), out=str(tmp_path), **SHORT)
    assert BuildConfig(corpus=str(corpus), out=str(tmp_path), engine="ray", ray_address="auto",
                       **SHORT).identity() == local.identity()
    with pytest.raises(ValueError, match="^engine: must be one of local, ray, got 'spark'"):
        BuildConfig(corpus=str(corpus), out=str(tmp_path), engine="spark")
    with pytest.raises(ValueError, match="^ray_address: only with --engine ray"):
        BuildConfig(corpus=str(corpus), out=str(tmp_path), ray_address="auto")


def test_engine_ray_without_ray_is_one_line(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError, as when it is absent
    with pytest.raises(UserError) as caught:
        build(corpus, tmp_path / "out", engine="ray")
    assert str(caught.value) == "--engine ray needs Ray: pip install 'fmashard[ray]'"


# ---------------------------------------------------------------------------------------- a real local Ray
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fmashard[ray]')")
    handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for signum, handler in handlers.items():   # ray.init's SIGTERM handler must not outlive these tests
        signal.signal(signum, handler)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_gives_the_local_bytes_and_resumes(ray_local, corpus, reference, tmp_path):
    out = tmp_path / "out"
    report = build(corpus, out, engine="ray")
    assert built_files(out) == reference and verify_build(str(out)).ok
    # a driver killed after some shards: the journal keeps them, a rerun builds only what is missing
    journal = sorted((out / ".fmashard-journal").glob("*.json"))
    (out / "manifest.json").unlink()
    journal[0].unlink()
    again = build(corpus, out, engine="ray")
    assert (again.shards_built, again.shards_kept) == (1, report.shards_built - 1)
    assert built_files(out) == reference


def _ray_task_pids() -> list[int]:
    """Processes running a build_shard task right now (Ray titles a busy worker `ray::build_shard`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::build_shard"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_ray_worker_killed_mid_task_is_retried_and_the_build_is_identical(ray_local, corpus, reference, tmp_path):
    out, done, killed = tmp_path / "out", {}, []
    thread = threading.Thread(target=lambda: done.update(report=build(corpus, out, engine="ray")))
    thread.start()
    deadline = time.monotonic() + 60
    while not killed and thread.is_alive() and time.monotonic() < deadline:
        if pids := _ray_task_pids():
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        time.sleep(0.002)
    thread.join(120)
    assert killed, "no Ray worker was seen running a shard task"
    assert "report" in done, "the build did not finish after its worker was killed"
    assert built_files(out) == reference and verify_build(str(out)).ok


# ---------------------------------------------------------------------------------------- the driver killed
def cli_build(corpus: Path, out: str, ray_address: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """`fmashard build --engine ray` in a fresh interpreter, joining the test's Ray (another job on it)."""
    args = ["build", "--corpus", corpus, "--out", out, "--engine", "ray", "--ray-address", ray_address,
            "--clip-seconds", SHORT["clip_seconds"], "--min-seconds", SHORT["min_seconds"],
            "--shard-size", SHORT["shard_size"]]
    return subprocess.Popen([sys.executable, "-m", "fmashard", *map(str, args)], env=env, text=True, **popen)


def ray_address(ray) -> str:
    return ray.get_runtime_context().gcs_address


@pytest.mark.ray
@pytest.mark.slow
def test_ray_driver_killed_mid_build_keeps_its_finished_shards(ray_local, corpus, reference, tmp_path):
    out, journal = tmp_path / "out", tmp_path / "out" / ".fmashard-journal"
    driver = cli_build(corpus, str(out), ray_address(ray_local), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline and not list(journal.glob("*.json")):
        time.sleep(0.005)
    assert driver.poll() is None, f"the build ended ({driver.returncode}) before its first journal record"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(30)
    kept = len(list(journal.glob("*.json")))
    assert kept >= 1 and not (out / "manifest.json").exists()
    again = build(corpus, out, engine="ray")
    assert again.shards_kept == kept and again.shards_built >= 1
    assert built_files(out) == reference and verify_build(str(out)).ok


# ---------------------------------------------------------------------------------------- s3:// through Ray
def s3_files(s3, prefix: str) -> dict[str, str]:
    """`built_files` of an s3:// build: sha256 of every object under the prefix."""
    client, files = s3.client(), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            rel = item["Key"][len(prefix) + 1:]
            if ".fmashard" not in rel and ".tmp-" not in rel:
                body = client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()
                files[rel] = hashlib.sha256(body).hexdigest()
    return files


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_ray_builds_to_s3_the_local_bytes(ray_local, s3, corpus, reference, monkeypatch):
    # the Ray was started before this process had the AWS settings: only the build's forwarding gives them
    probe = ray_local.remote(lambda name: os.environ.get(name))   # a lambda: sent by value to the worker
    assert ray_local.get(probe.remote("AWS_ENDPOINT_URL")) is None
    for name, value in s3.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    report = build(corpus, s3.url("engines/ray"), engine="ray")
    assert report.tracks_skipped == 2 and s3_files(s3, "engines/ray") == reference
    assert verify_build(s3.url("engines/ray")).ok


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_a_bucket_gone_mid_build_under_ray_is_one_line_naming_the_shard(ray_local, s3, corpus, tmp_path):
    """The driver writes its build file, then the bucket disappears before any shard task runs (both
    Ray CPUs are held until then): every task fails, the build stops with one line, exit 2."""
    bucket, client, release = "fmashard-engines-gone", s3.client(), tmp_path / "release"
    client.create_bucket(Bucket=bucket)

    def hold_a_cpu(release: str) -> None:   # nested: sent by value (the worker cannot import this module)
        while not os.path.exists(release):
            time.sleep(0.01)

    hold = ray_local.remote(num_cpus=1)(hold_a_cpu)
    holders = [hold.remote(str(release)) for _ in range(2)]
    driver = cli_build(corpus, f"s3://{bucket}/x", ray_address(ray_local), env=s3.env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while driver.poll() is None and time.monotonic() < deadline:
            if client.list_objects_v2(Bucket=bucket, Prefix="x/.fmashard-build.json").get("KeyCount"):
                break
            time.sleep(0.01)
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
    finally:
        release.touch()
        ray_local.get(holders)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 2 and "Traceback" not in stdout + stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if not line.startswith("decoding ")]  # the progress bar
    assert len(lines) == 1 and lines[0].startswith(f"error: s3://{bucket}/x/"), stderr
    assert re.search(r"shard \w+-\d{6}|\w+-\d{6}\.(tar|idx)", lines[0]) and "does not exist" in lines[0], lines[0]
    assert s3.secret_key not in stdout + stderr and s3.access_key not in stdout + stderr
