"""The data path against a real S3-compatible server (SeaweedFS, `weed mini` on 127.0.0.1): the loaders,
and the `fmashard` commands with credentials from the standard AWS chain, never printed."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fmashard.bench.naive import NaiveFileDataset, naive_loader
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from s3_server import write_files_layout
from synth_shards import VOCAB, write_synthetic_shards

pytestmark = pytest.mark.s3
COUNTS = [5, 2, 7, 4]   # uneven: ranges start and end mid-shard
CLIP = 3000



@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process talks to the server through the standard AWS environment variables."""
    for name, value in s3.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3


@pytest.fixture(scope="module")
def uploaded(s3, tmp_path_factory):
    """Synthetic shards and the same tracks as one .pt per track, locally and under s3://bucket/."""
    root = tmp_path_factory.mktemp("s3-shards")
    truth = write_synthetic_shards(root / "shards", COUNTS, clip_samples=CLIP)
    write_files_layout(root / "files", truth, VOCAB, CLIP)
    return root, truth, s3.upload_tree(root / "shards", "synth/shards"), s3.upload_tree(root / "files", "synth/files")


def batches(source, **kw):
    return [(b.track_ids.tolist(), b.labels.tolist(), b.audio.clone())
            for b in ShardLoader(resolve_source(source), LoaderConfig(batch_size=4, seed=5, **kw))]


def test_server_checks_signatures_and_starts_fast(s3):
    from botocore.exceptions import ClientError

    s3.client().put_object(Bucket=s3.bucket, Key="probe/hello", Body=b"hello")
    assert s3.client().get_object(Bucket=s3.bucket, Key="probe/hello")["Body"].read() == b"hello"
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3.client(secret="not-the-secret").get_object(Bucket=s3.bucket, Key="probe/hello")
    assert s3.startup_seconds < 20, f"weed mini took {s3.startup_seconds:.1f} s to answer"


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_loader_over_s3_gives_the_local_batches(uploaded, s3_env, workers):
    root, truth, shards_url, _ = uploaded
    local = batches(root / "shards", num_workers=workers)
    for source in (f"{shards_url}/manifest.json", shards_url):   # a prefix finds its manifest.json
        remote = batches(source, num_workers=workers)
        assert [(i, lab) for i, lab, _ in remote] == [(i, lab) for i, lab, _ in local]
        assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(remote, local))
    assert sorted(t for ids, _, _ in remote for t in ids) == sorted(truth)
    for ids, labels, audio in remote[:2]:
        assert np.array_equal(audio[0].numpy(), truth[ids[0]][0]) and labels[0] == truth[ids[0]][1]


def test_naive_per_object_loader_over_s3(uploaded, s3_env):
    root, truth, _, files_url = uploaded
    window = WindowSpec(window=1000, count=3)
    remote, local = (NaiveFileDataset(src, window=window) for src in (files_url, root / "files"))
    assert len(remote) == len(truth)
    got = list(naive_loader(remote, batch_size=4, seed=1))
    want = list(naive_loader(local, batch_size=4, seed=1))
    assert len(got) == len(want) == -(-len(truth) // 4)
    for (gw, gl), (ww, wl) in zip(got, want):
        assert torch.equal(gl, wl) and all(torch.equal(a, b) for a, b in zip(gw, ww))
    first = remote.files[0]
    audio = truth[first["track_id"]][0]
    assert torch.allclose(remote[0][0][0], torch.from_numpy(audio[:1000].astype("float32") / 32768))


# ---------------------------------------------------------------- the command line over s3://
def run_cli(*args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmashard", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def leaked(result, *secrets) -> list[str]:
    text = result.stdout + result.stderr
    return [s for s in secrets if s in text]


@pytest.fixture(scope="session")
def tiny_corpus(request, tmp_path_factory) -> Path:
    """A 2-genre x 10-track demo corpus (real MP3s).  MP3 encoding is the slow part (about a minute on a
    loaded machine), so the corpus is kept in pytest's cache, keyed by the generator's source."""
    import shard_tools.demo_corpus as demo

    cache = getattr(request.config, "cache", None)   # None with -p no:cacheprovider
    if cache is None:
        folder = tmp_path_factory.mktemp("tiny-corpus") / "corpus"
    else:
        digest = hashlib.sha256(Path(demo.__file__).read_bytes()).hexdigest()[:12]
        folder = Path(cache.mkdir(f"fmashard-s3-corpus-{digest}"))
    if not (folder / "fma_metadata" / "tracks.csv").is_file():   # written last: a finished corpus
        shutil.rmtree(folder, ignore_errors=True)
        demo.make_demo_corpus(folder, genres=2, tracks_per_genre=10, seed=0)
    return folder


def test_cli_build_verify_train_bench_over_s3_never_print_credentials(s3_env, tiny_corpus, tmp_path):
    s3 = s3_env
    env, url = s3.env(), s3.url("cli/build")
    secrets = (s3.access_key, s3.secret_key)
    runs = []

    build = run_cli("build", "--fma-dir", tiny_corpus, "--subset", "small", "--out", url, "--workers", "1",
                    "--shard-size", "4MB", env=env)
    runs.append(build)
    assert build.returncode == 0, build.stderr
    assert "18 tracks written" in build.stdout
    manifest = s3.client().get_object(Bucket=s3.bucket, Key="cli/build/manifest.json")["Body"].read()
    assert b'"layout": "shards"' in manifest or b'"layout":"shards"' in manifest

    verify = run_cli("verify", url, env=env)
    runs.append(verify)
    assert verify.returncode == 0 and verify.stdout.strip().splitlines()[-1].startswith("OK"), verify.stdout

    # the loader reads every track of the s3 build exactly once, with the manifest's labels
    seen = []
    for split in ("training", "validation", "test"):
        spec = resolve_source(f"{url}/manifest.json", split)
        assert spec.shards[0].url.startswith(f"{url}/{split}/{split}-000000.tar")
        for batch in ShardLoader(spec, LoaderConfig(batch_size=4, num_workers=0)):
            assert batch.audio.shape[1] == spec.clip_samples and batch.audio.abs().max() > 0
            assert set(batch.labels.tolist()) <= set(range(len(spec.vocabulary)))
            seen += batch.track_ids.tolist()
    assert len(seen) == len(set(seen)) == 18

    # train streams the s3 build (one step is enough: the loader path is what is under test here)
    run_dir = tmp_path / "run"
    train = run_cli("train", "--shards", f"{url}/manifest.json", "--out", run_dir, "--epochs", "1", "--max-steps",
                    "1", "--batch-size", "4", "--device", "cpu", "--window-seconds", "1", "--windows", "1",
                    "--log-batches", env=env)
    runs.append(train)
    assert train.returncode == 0, train.stderr[-2000:]
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 1 and len(steps[0]["track_ids"]) == 4 and set(steps[0]["track_ids"]) <= set(seen)
    assert (run_dir / "last.pt").is_file()

    # a corrupted object is caught by verify over s3:// too
    key = "cli/build/training/training-000000.tar"
    data = bytearray(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    data[5000] ^= 0xFF
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))
    bad = run_cli("verify", url, env=env)
    runs.append(bad)
    assert bad.returncode == 1 and "training-000000.tar" in bad.stdout
    data[5000] ^= 0xFF
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))

    # bench with --endpoint-url instead of AWS_ENDPOINT_URL
    no_endpoint = s3.env(endpoint=False)
    bench = run_cli("bench", "--shards", f"{url}/manifest.json", "--loaders", "fmashard-host,raw", "--rounds", "1",
                    "--device", "cpu", "--endpoint-url", s3.endpoint, env=no_endpoint)
    runs.append(bench)
    assert bench.returncode == 0, bench.stderr[-2000:]

    # error paths print no credential either: a wrong secret (build, verify), a missing bucket (build)
    wrong = "wrong-" + s3.secret_key[::-1]
    for args in (("verify", url), ("build", "--fma-dir", tiny_corpus, "--out", s3.url("cli/other"))):
        failed = run_cli(*args, env=s3.env(secret=wrong))
        runs.append(failed)
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
        assert re.fullmatch(r"error: s3://\S+: access denied \(SignatureDoesNotMatch\): check the AWS "
                            r"credentials\n", failed.stderr), failed.stderr
        assert wrong not in failed.stdout + failed.stderr
    failed = run_cli("build", "--fma-dir", tiny_corpus, "--out", "s3://no-such-bucket/x", env=env)
    runs.append(failed)
    assert failed.returncode == 2 and failed.stderr.startswith("error: s3://no-such-bucket/"), failed.stderr
    assert len(failed.stderr.splitlines()) == 1
    for result in runs:
        assert not leaked(result, *secrets), (result.args, leaked(result, *secrets))
