"""Local shards of the fixed layout are read batch by batch (`WorkerStream._gathered`); shards behind a
URL stream by as the file goes.  Both give the same batches in the same order, and the same errors."""
import shutil

import numpy as np
import pytest

from fmashard.data.loader import LoaderConfig, ShardLoader, WorkerStream
from fmashard.data.plan import PlanConfig, worker_plan
from fmashard.data.sources import resolve_source
from fmashard.errors import DataError, ErrorPolicy
from http_server import FolderServer
from synth_shards import write_synthetic_shards

COUNTS = [7, 3, 9, 1, 6, 5]


@pytest.fixture(scope="module")
def one_fault(tmp_path_factory):
    """Shards with one damaged header (shard 2, record 4)."""
    root = tmp_path_factory.mktemp("one-fault")
    write_synthetic_shards(root, COUNTS, clip_samples=1000)
    rb = resolve_source(root).record_bytes
    path = root / "training" / "training-000002.tar"
    data = bytearray(path.read_bytes())
    data[4 * rb + 1024 + 5] ^= 0x01          # the .json header's checksum fails
    path.write_bytes(bytes(data))
    return root


@pytest.fixture(scope="module")
def damaged(one_fault, tmp_path_factory):
    """The same, and one shard gone (shard 4)."""
    root = tmp_path_factory.mktemp("damaged") / "shards"
    shutil.copytree(one_fault, root)
    (root / "training" / "training-000004.tar").unlink()
    return root


def run(source, **kw):
    loader = ShardLoader(resolve_source(source), LoaderConfig(batch_size=4, seed=5, **kw))
    got = [(b.track_ids.tolist(), b.labels.tolist(), b.audio.numpy().copy()) for b in loader]
    return got, loader.policy.num_skipped


def same(a, b):
    return len(a) == len(b) and all(x[0] == y[0] and x[1] == y[1] and np.array_equal(x[2], y[2])
                                    for x, y in zip(a, b))


def test_local_shards_are_gathered_and_urls_stream(tmp_path):
    write_synthetic_shards(tmp_path, [3, 2], clip_samples=500)
    spec = resolve_source(tmp_path)
    plan = worker_plan(spec, PlanConfig(batch_size=2), 0, 0, 1, 0, 1)
    assert WorkerStream(spec, plan, ErrorPolicy(), None).reader.by_batch
    with FolderServer(tmp_path) as url:
        remote = resolve_source(url)
        assert not WorkerStream(remote, worker_plan(remote, PlanConfig(batch_size=2), 0, 0, 1, 0, 1),
                                ErrorPolicy(), None).reader.by_batch


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gathered_batches_equal_streamed_ones_with_a_damaged_record_and_a_missing_shard(damaged, threads):
    local, lost_local = run(damaged, on_error="skip", read_threads=threads)
    with FolderServer(damaged) as url:
        streamed, lost_streamed = run(url, on_error="skip", read_threads=threads)
    assert same(local, streamed)
    assert lost_local == lost_streamed == 1 + COUNTS[4]
    assert sum(len(ids) for ids, _, _ in local) == sum(COUNTS) - 1 - COUNTS[4]


@pytest.mark.parametrize("shuffle", [False, True])
def test_gathered_and_streamed_raise_the_same_error(one_fault, shuffle):
    with pytest.raises(DataError) as local:
        run(one_fault, shuffle=shuffle)
    with FolderServer(one_fault) as url, pytest.raises(DataError) as streamed:
        run(url, shuffle=shuffle)
    assert type(local.value) is type(streamed.value) and local.value.key == streamed.value.key
    assert "damaged tar header" in str(local.value)


@pytest.mark.parametrize("drop_last, shuffle", [(False, True), (True, True), (False, False)])
def test_each_planned_batch_holds_exactly_its_buffers_members(drop_last, shuffle):
    """_gathered reads a batch's members in slot order: the plan's batch sizes must be their counts."""
    write = {"batch_size": 4, "drop_last": drop_last, "shuffle": shuffle, "shuffle_buffer": 12}

    class Spec:   # worker_plan needs the shards' sizes only
        shards = [type("S", (), {"num_samples": n, "url": f"s{i}"})() for i, n in enumerate(COUNTS)]
        num_samples = sum(COUNTS)
    plan = worker_plan(Spec, PlanConfig(**write), 0, 0, 1, 0, 1)
    members = plan.batches.members()
    assert len(plan.batches.full) == (sum(COUNTS) // 4 if drop_last else -(-sum(COUNTS) // 4))
    for buffer, _, size in plan.batches.full:
        assert len(members[buffer]) == size
        assert plan.batches.slot_of[members[buffer]].tolist() == list(range(size))
