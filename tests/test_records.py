"""Local shards read batch by batch (each record of a batch, wherever it lies, into its row; a bad record
costs only itself); SegmentReader reads a segment one way or another into the same slots; ParallelReads
keeps the order."""
import numpy as np
import pytest

from fmashard.data.collate import LABEL, TRACK_ID, VALID, BatchBuffers
from fmashard.data.plan import PlanConfig, worker_plan
from fmashard.data.records import (
    LocalShard,
    LocalShards,
    ParallelReads,
    RecordLayout,
    SegmentReader,
    read_batch,
    read_pool,
)
from fmashard.data.sources import resolve_source
from fmashard.errors import DataError, ErrorPolicy, NotFoundError
from fmashard.format.tar import PREAMBLE
from synth_shards import write_synthetic_shards

CLIP = 1001   # odd sample count: every record has tar padding after its audio


def setup(tmp_path, counts=(6,)):
    truth = write_synthetic_shards(tmp_path, list(counts), clip_samples=CLIP)
    spec = resolve_source(tmp_path)
    return spec, truth, BatchBuffers(spec, 4, pin=False, shared=False)


def shard(spec, k=0):
    return LocalShard(spec.shards[k].url, spec.record_bytes, spec.sample_bytes, "pcm")


def test_a_batch_of_records_from_anywhere_lands_in_its_rows(tmp_path):
    spec, truth, buffers = setup(tmp_path, (3, 4))
    a, b = shard(spec, 0), shard(spec, 1)
    ids = sorted(truth)
    records, want = [(b, 2), (a, 0), (b, 0), (a, 2)], [ids[5], ids[0], ids[3], ids[2]]
    assert read_batch(buffers, 0, [3, 1, 0, 2], records) == []
    audio, meta = buffers.take(0, 4)
    for row, tid in zip([3, 1, 0, 2], want):
        assert meta[row, TRACK_ID] == tid and meta[row, LABEL] == truth[tid][1] and meta[row, VALID] == 1
        np.testing.assert_array_equal(audio[row].numpy(), truth[tid][0])
    a.close(), b.close()


def test_a_damaged_record_costs_only_itself(tmp_path):
    spec, truth, buffers = setup(tmp_path)
    path = tmp_path / "training" / "training-000000.tar"
    data = bytearray(path.read_bytes())
    data[2 * spec.record_bytes + 1024 + 7] ^= 0x01    # third record's .json header
    path.write_bytes(bytes(data))
    s = shard(spec)
    failed = read_batch(buffers, 0, [0, 1, 2, 3], [(s, i) for i in range(4)])
    assert [pos for pos, _ in failed] == [2] and "damaged tar header" in str(failed[0][1])
    audio, meta = buffers.take(0, 4)
    assert meta[:, VALID].tolist() == [1, 1, 0, 1]
    for row in (0, 1, 3):
        np.testing.assert_array_equal(audio[row].numpy(), truth[sorted(truth)[row]][0])
    s.close()


def test_reading_past_a_truncated_end_names_the_key(tmp_path):
    spec, truth, buffers = setup(tmp_path, (3,))
    path = tmp_path / "training" / "training-000000.tar"
    path.write_bytes(path.read_bytes()[: 2 * spec.record_bytes + PREAMBLE + 100])
    s = shard(spec)
    failed = read_batch(buffers, 0, [0, 1, 2], [(s, i) for i in range(3)])
    key = f"{sorted(truth)[2]:06d}"
    assert [pos for pos, _ in failed] == [2]
    error = failed[0][1]
    assert isinstance(error, DataError) and f"key {key}" in str(error) and "truncated" in str(error)
    assert buffers.take(0, 3)[1][:, VALID].tolist() == [1, 1, 0]
    s.close()


def test_a_shard_that_cannot_be_opened_costs_its_records_once_and_leaves_them_invalid(tmp_path):
    spec, truth, buffers = setup(tmp_path, (2, 2))
    (tmp_path / "training" / "training-000001.tar").unlink()
    plan = worker_plan(spec, PlanConfig(batch_size=4, shuffle=False), 0, 0, 1, 0, 1)
    batches = [plan.batches.members()[0]]
    shards, policy = LocalShards(plan.segments, batches, RecordLayout.of(spec), {}), ErrorPolicy("skip")
    records = shards.records(0, policy)
    assert [s is None for s, _ in records] == [False, False, True, True] and policy.num_skipped == 2
    assert read_batch(buffers, 0, [0, 1, 2, 3], records) == []
    assert buffers.take(0, 4)[1][:, VALID].tolist() == [1, 1, 0, 0]
    shards.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_parallel_reads_come_back_in_submission_order(threads):
    reads, got = ParallelReads(threads, depth=2), []
    for i in range(10):
        got += [(tag, r.result()) for tag, r in reads.submit(i, lambda x: x * x, i)]
    got += [(tag, r.result()) for tag, r in reads.drain()]
    reads.close()
    assert got == [(i, i * i) for i in range(10)]


def test_the_read_threads_are_made_once_per_process_and_thread_count():
    """Each pass over the data used to start (and join) its own threads; the pool is now kept."""
    first = ParallelReads(2, depth=2)
    first.close()
    second = ParallelReads(2, depth=2)
    assert second.pool is first.pool is read_pool(2)
    assert read_pool(3) is not read_pool(2) and ParallelReads(1, depth=1).pool is None
    assert [fut.result() for _, fut in second.submit(0, sum, [1, 2])] == [] and second.drain()[0][1].result() == 3


@pytest.mark.parametrize("threads", [1, 2])
def test_the_reader_reads_a_segment_one_way_or_another_into_the_same_slots(tmp_path, threads):
    """`read` (one stream with 1 thread, ranged jobs with 2) fills audio slots and meta rows in order."""
    truth = write_synthetic_shards(tmp_path, [5], clip_samples=CLIP)
    spec = resolve_source(tmp_path)
    plan = worker_plan(spec, PlanConfig(batch_size=5, shuffle=False), 0, 0, 1, 0, 1)
    buffers = BatchBuffers(spec, 5, pin=False, shared=False, pending=plan.pending, samples=plan.num_samples)
    reader = SegmentReader(plan.segments, RecordLayout.of(spec), ErrorPolicy(), buffers, read_threads=threads)
    assert reader.by_batch   # local, fixed layout: the loader reads it with read_batches
    with reader:
        counts = list(reader.read(plan.segments[0].url, 1, [(0, row) for row in range(4)]))
    assert sum(counts) == 4
    audio, meta = buffers.take(0, 4)
    ids = sorted(truth)[1:5]
    assert meta[:, TRACK_ID].tolist() == ids and meta[:, VALID].tolist() == [1] * 4
    assert meta[:, LABEL].tolist() == [truth[i][1] for i in ids]
    assert all(np.array_equal(audio[r].numpy(), truth[i][0]) for r, i in enumerate(ids))


def test_a_failed_read_stops_as_itself_or_costs_its_samples():
    error = NotFoundError("http://host/a.tar", "not found")
    with pytest.raises(NotFoundError):
        ErrorPolicy("raise").handle_read(error)
    policy = ErrorPolicy("skip")
    policy.handle_read(error, lost=3)
    assert policy.skipped == {"DataError": 3} and policy.examples == ["http://host/a.tar: not found"]
