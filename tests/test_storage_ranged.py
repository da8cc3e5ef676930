"""storage.open_ranged: a seekable file over an object, fetched in ranged pieces (SeaweedFS on 127.0.0.1).

It lets the build read an audio header from object storage without downloading the file
(`shard_tools.build_plan._header`, for `--long-tracks all` plans)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from fmashard import storage
from shard_tools.build_plan import _header
from test_corpus import write_audio

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_env(s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def upload(s3, path, key) -> str:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=path.read_bytes())
    return s3.url(key)


def test_seeks_and_reads_return_the_object_s_bytes(s3_env, tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 700_001, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(data)
    url = upload(s3_env, tmp_path / "blob", "ranged/blob")
    with storage.open_ranged(url, buffer_size=64 * 1024) as f:
        assert f.read(10) == data[:10] and f.tell() == 10
        f.seek(-5, 2)
        assert f.read() == data[-5:] and f.read(3) == b""
        for start, n in ((123_456, 200_000), (0, 1), (699_990, 100), (65_530, 12)):
            f.seek(start)
            assert f.read(n) == data[start:start + n], (start, n)
        with pytest.raises(ValueError, match="negative"):
            f.seek(-1)
        assert f.raw.reads <= 8 and f.raw.bytes_read < 2 * len(data)


@pytest.mark.parametrize(("name", "seconds", "channels"), [
    ("long.wav", 120, 2), ("long.ogg", 120, 1), ("long.mp3", 120, 2), ("long.flac", 120, 1)])
def test_an_audio_header_costs_a_few_ranged_reads_not_the_file(s3_env, tmp_path, name, seconds, channels):
    path = write_audio(tmp_path / name, seconds, seed=1, rate=44100, channels=channels)
    url = upload(s3_env, path, f"ranged/{name}")
    assert _header(url) == (sf.info(path).frames, 44100)
    with storage.open_ranged(url) as f:
        info = sf.info(f)
        fetched, reads = f.raw.bytes_read, f.raw.reads
    assert info.frames == sf.info(path).frames
    size = path.stat().st_size
    assert fetched <= 4 * 256 * 1024 < size, (fetched, reads, size)


def test_mp3_headers_agree_with_the_local_file(s3_env, fixture_mp3):
    """The real FMA clip: the same frame count and rate as soundfile reads from the local file."""
    url = upload(s3_env, fixture_mp3, "ranged/000002.mp3")
    info = sf.info(fixture_mp3)
    assert _header(url) == (info.frames, info.samplerate)


def test_a_local_path_opens_the_file_itself(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    with storage.open_ranged(str(tmp_path / "x")) as f:
        assert f.name == str(tmp_path / "x") and f.read() == b"abc"
