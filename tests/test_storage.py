import pytest

from fmashard import storage
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.errors import NotFoundError, StorageError
from http_server import FolderServer
from synth_shards import write_synthetic_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, [5, 4, 6], clip_samples=3000)
    return root


def batches(source, **kw):
    return [(b.track_ids.tolist(), b.audio.clone()) for b in
            ShardLoader(resolve_source(source), LoaderConfig(batch_size=4, seed=3, **kw))]


def same(a, b):
    return len(a) == len(b) and all(ia == ib and (xa == xb).all() for (ia, xa), (ib, xb) in zip(a, b))


@pytest.mark.parametrize("threads", [1, 2])   # one stream per run, or ranged requests by read threads
def test_http_source_streams_the_same_samples_as_the_folder(shards, threads):
    local = batches(shards)
    with FolderServer(shards) as url:
        assert same(batches(f"{url}/manifest.json", read_threads=threads), local)
        assert same(batches(url, read_threads=threads), local)  # a folder URL finds its manifest.json


@pytest.mark.parametrize("threads", [1, 2])
def test_a_read_cut_mid_shard_resumes_at_the_byte_it_reached(shards, threads):
    local = batches(shards, shuffle=False)
    server = FolderServer(shards)
    with server as url:
        server.handler.faults["/training/training-000001.tar"] = [10_000, 7_000]  # two cuts in a row
        got = batches(f"{url}/manifest.json", shuffle=False, read_threads=threads)
        ranges = [r for p, r in server.handler.requests if p == "/training/training-000001.tar"]
    assert same(got, local)
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges if r]
    assert len(ranges) == 3 and starts[1] >= 10_000 and starts[2] >= starts[1] + 7_000


def test_not_found_and_retries_exhausted_name_the_url(shards, monkeypatch):
    with FolderServer(shards) as url:
        with pytest.raises(NotFoundError, match=r"/nope\.tar: not found"):
            storage.open_stream(f"{url}/nope.tar")
    dead = "http://127.0.0.1:9/training/training-000000.tar"   # discard port: connection refused
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:9/training/training-000000\.tar: failed after 2"):
        storage.ReadStream(dead, retry=storage.RetryPolicy(attempts=2, backoff=0.01))


def test_local_stream_range_and_skip(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 4)
    with storage.open_stream(str(path), 10, 20) as s:
        assert s.read() == bytes(range(10, 20))
    with storage.open_stream(f"file://{path}", 1000) as s:
        assert s.skip(100) == 24 and s.read() == b""


def test_pipe_refusal_names_only_a_switch_that_exists(tmp_path):
    from fmashard.data.loader import LoaderConfig
    from fmashard.data.sources import resolve_source
    from fmashard.errors import UserError

    url = f"pipe:touch {tmp_path / 'ran'}"
    errors = []
    for call in (lambda: storage.open_stream(url), lambda: resolve_source(url)):
        with pytest.raises(UserError) as info:
            call()
        errors.append(str(info.value))
    for message in errors:
        assert "--allow-pipe" not in message and "allow_pipe=True" in message
    assert "allow_pipe" in LoaderConfig.__dataclass_fields__        # the switch it names is real
    assert not (tmp_path / "ran").exists()


def test_a_mid_stream_pipe_open_is_refused_before_the_command_runs(tmp_path, monkeypatch):
    from fmashard.storage import pipe

    started = []
    real = pipe.subprocess.Popen
    monkeypatch.setattr(pipe.subprocess, "Popen", lambda *a, **kw: started.append(a) or real(*a, **kw))
    with pytest.raises(StorageError, match="cannot start mid-stream"):
        storage.open_stream(f"pipe:touch {tmp_path / 'ran'}", 100, allow_pipe=True)
    assert started == [] and not (tmp_path / "ran").exists()
    with storage.open_stream("pipe:echo hi", allow_pipe=True) as stream:   # from the start it runs
        assert stream.read() == b"hi\n" and len(started) == 1
