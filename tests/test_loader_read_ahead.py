"""Read-ahead (a background thread reading the next batches) is on exactly when the read threads do not
read ahead themselves: they serve the fixed record layout over seekable storage only (issue 26)."""
import dataclasses
import json

import numpy as np
import pytest

import fmashard.data.loader as loader_module
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.format.tar import END_OF_ARCHIVE, member_header, padded
from synth_shards import write_synthetic_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    truth = write_synthetic_shards(root, [3, 4], clip_samples=500)
    return resolve_source(root), truth


def read_ahead_depths(spec, monkeypatch, **config):
    """The depth of every read_ahead the loader started for one epoch, and the tracks it gave."""
    depths, real = [], loader_module.read_ahead
    monkeypatch.setattr(loader_module, "read_ahead", lambda it, depth: depths.append(depth) or real(it, depth))
    ids = sorted(t for b in ShardLoader(spec, LoaderConfig(batch_size=2, **config)) for t in b.track_ids.tolist())
    return depths, ids


@pytest.mark.parametrize("threads, depths", [(1, [2]), (2, [])])
def test_the_fixed_layout_reads_ahead_on_its_threads_or_with_read_ahead(shards, monkeypatch, threads, depths):
    spec, truth = shards
    assert read_ahead_depths(spec, monkeypatch, read_threads=threads) == (depths, sorted(truth))


def write_other_layout(root, count: int, clip: int = 500) -> list[int]:
    """A tar whose records are not fmashard's fixed layout: a .json of two blocks (another tool's)."""
    out = bytearray()
    for track in range(count):
        for ext, data in (("cls", b"1"), ("json", json.dumps({"pad": "x" * 600}).encode()),
                          ("pcm", np.full(clip, track, "<i2").tobytes())):
            out += member_header(f"{track:06d}.{ext}", len(data)) + data + bytes(padded(len(data)) - len(data))
    (root / "other.tar").write_bytes(bytes(out + END_OF_ARCHIVE))
    return list(range(count))


@pytest.mark.parametrize("threads", [1, 2])
def test_another_record_layout_reads_ahead_whatever_read_threads_says(tmp_path, monkeypatch, threads):
    """Records not of the fixed layout are read by the general parser in the loader's thread: the read
    threads are idle there, so read-ahead must stay on (it was off for read_threads > 1)."""
    truth = write_other_layout(tmp_path, 5)
    spec = resolve_source(str(tmp_path / "other.tar"))
    assert not spec.fixed_layout
    assert read_ahead_depths(spec, monkeypatch, read_threads=threads) == ([2], truth)


def test_pipe_urls_read_ahead_with_read_threads(shards, monkeypatch):
    spec, truth = shards
    piped = dataclasses.replace(spec, shards=tuple(dataclasses.replace(s, url=f"pipe:cat {s.url}")
                                                   for s in spec.shards))
    assert read_ahead_depths(piped, monkeypatch, read_threads=2, allow_pipe=True) == ([2], sorted(truth))
