"""shard_tools.tar_writer + dali_index: fixed-stride, deterministic USTAR records and DALI's .idx."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fmashard.format.tar import BLOCK, record_bytes, shard_bytes
from shard_tools.build_config import parse_size
from shard_tools.dali_index import group_members, index_of_tar
from shard_tools.tar_writer import ShardWriter

WDS2IDX = shutil.which("wds2idx") or str(Path(sys.executable).parent / "wds2idx")


def write_shard(folder: Path, n: int, sample_bytes: int = 1000, ext: str = "pcm", name: str = "s") -> Path:
    rng = np.random.default_rng(n)
    writer = ShardWriter(folder / f"{name}.tar", folder / f"{name}.idx", ext, sample_bytes)
    for i in range(n):
        key = f"{100 + 17 * i:06d}"
        meta = {"track_id": 100 + 17 * i, "genre": "Hip-Hop", "label": i % 3, "num_samples": i}
        writer.add(key, i % 3, meta, rng.bytes(sample_bytes))
    result = writer.commit()
    assert result.num_samples == n and result.keys[0] == "000100"
    return folder / f"{name}.tar"


@pytest.mark.parametrize("sample_bytes,ext", [(1000, "pcm"), (1024, "f16"), (1, "pcm")])
def test_round_trip_fixed_stride(tmp_path, sample_bytes, ext):
    path = write_shard(tmp_path, 5, sample_bytes, ext)
    data = path.read_bytes()
    stride = record_bytes(sample_bytes)
    assert len(data) == shard_bytes(5, sample_bytes) and data[-1024:] == bytes(1024)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name.split(".")[1] for m in members] == ["cls", "json", ext] * 5
        for i in range(5):
            cls, meta, audio = members[3 * i : 3 * i + 3]
            assert cls.offset == i * stride  # sample i starts at i * record_bytes
            assert tar.extractfile(cls).read() == str(i % 3).encode()
            assert b'"genre":"Hip-Hop"' in tar.extractfile(meta).read()  # compact json
            assert audio.size == sample_bytes and audio.offset_data == i * stride + 5 * BLOCK


def test_same_input_same_bytes(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = write_shard(tmp_path / "a", 4), write_shard(tmp_path / "b", 4)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert a.with_suffix(".idx").read_bytes() == b.with_suffix(".idx").read_bytes()
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_sha256_is_of_the_file(tmp_path):
    writer = ShardWriter(tmp_path / "s.tar", tmp_path / "s.idx", "pcm", 10)
    writer.add("000001", 0, {"track_id": 1}, bytes(10))
    result = writer.commit()
    assert result.sha256 == hashlib.sha256((tmp_path / "s.tar").read_bytes()).hexdigest()
    assert result.num_bytes == (tmp_path / "s.tar").stat().st_size


def test_abort_leaves_nothing(tmp_path):
    writer = ShardWriter(tmp_path / "s.tar", tmp_path / "s.idx", "pcm", 10)
    writer.add("000001", 0, {"track_id": 1}, bytes(10))
    with pytest.raises(ValueError, match="10"):
        writer.add("000002", 0, {"track_id": 2}, bytes(9))  # wrong audio size
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_json_must_fit_one_block(tmp_path):
    writer = ShardWriter(tmp_path / "s.tar", tmp_path / "s.idx", "pcm", 10)
    with pytest.raises(ValueError, match="< 512 bytes"):
        writer.add("000001", 0, {"genre": "x" * 600}, bytes(10))
    writer.abort()


def test_index_matches_tarfile_offsets(tmp_path):
    path = write_shard(tmp_path, 3)
    lines = path.with_suffix(".idx").read_text().splitlines()
    assert lines[0] == "v1.2 3"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    for line, trio in zip(lines[1:], [members[i : i + 3] for i in range(0, 9, 3)]):
        want = " ".join(f"{m.name.split('.')[1]} {m.offset_data} {m.size} {m.name}" for m in trio)
        assert line == want
    assert path.with_suffix(".idx").read_text() == index_of_tar(path)


def test_index_groups_members_by_the_format_key_rule():
    """Members group by key (the name up to the first dot of its last component), so a dot in a folder
    name does not split a sample; names without an extension are their own key."""
    names = ["v1.0/000001.cls", "v1.0/000001.json", "v1.0/000001.pcm", "v1.0/000002.cls", "README", ".hidden"]
    samples = group_members((name, 512 * i, 1) for i, name in enumerate(names))
    assert [[e[0] for e in s] for s in samples] == [["cls", "json", "pcm"], ["cls"], [""]]
    assert samples[0][2] == ("pcm", 1024, 1, "v1.0/000001.pcm")


def test_index_matches_wds2idx(tmp_path):
    if not Path(WDS2IDX).exists():
        pytest.skip("wds2idx (NVIDIA DALI's index tool) is not installed")
    path = write_shard(tmp_path, 6, 2000)
    subprocess.run([WDS2IDX, str(path), str(tmp_path / "ref.idx")], check=True, capture_output=True)
    assert (tmp_path / "ref.idx").read_bytes() == path.with_suffix(".idx").read_bytes()


@pytest.mark.parametrize("text,size", [("256MB", 256 << 20), ("64MiB", 64 << 20), ("5MB", 5 << 20),
                                       ("4096", 4096), (4096, 4096), ("1g", 1 << 30), ("1.5KB", 1536)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects_garbage():
    with pytest.raises(ValueError, match="shard_size"):
        parse_size("lots")
