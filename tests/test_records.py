"""Local shards read in place: one preadv per run of records, a bad record costs only itself."""
import numpy as np
import pytest

from fmashard.data.collate import LABEL, TRACK_ID, VALID, BatchBuffers
from fmashard.data.plan import PlanConfig, worker_plan
from fmashard.data.records import LocalShard, ParallelReads, RecordLayout, SegmentReader
from fmashard.data.sources import resolve_source
from fmashard.errors import DataError, ErrorPolicy, NotFoundError
from fmashard.format.tar import PREAMBLE
from synth_shards import write_synthetic_shards

CLIP = 1001   # odd sample count: every record has tar padding after its audio


def open_shard(tmp_path, count=6):
    truth = write_synthetic_shards(tmp_path, [count], clip_samples=CLIP)
    spec = resolve_source(tmp_path)
    path = tmp_path / "training" / "training-000000.tar"
    return spec, path, truth


def read(spec, path, first, count):
    shard = LocalShard(str(path), spec.record_bytes, spec.sample_bytes, "pcm")
    slots = [np.zeros(spec.sample_bytes, np.uint8) for _ in range(count)]
    try:
        return shard.read_many(first, slots), slots
    finally:
        shard.close()


def test_read_many_scatters_consecutive_records_into_their_slots(tmp_path):
    spec, path, truth = open_shard(tmp_path)
    samples, slots = read(spec, path, 1, 4)
    ids = sorted(truth)[1:5]
    assert [int(s.key) for s in samples] == ids
    assert [s.label for s in samples] == [truth[t][1] for t in ids]
    for slot, tid in zip(slots, ids):
        np.testing.assert_array_equal(slot.view("<i2"), truth[tid][0])


def test_a_damaged_record_costs_only_itself(tmp_path):
    spec, path, truth = open_shard(tmp_path)
    data = bytearray(path.read_bytes())
    data[2 * spec.record_bytes + 1024 + 7] ^= 0x01    # third record's .json header
    path.write_bytes(bytes(data))
    samples, slots = read(spec, path, 0, 4)
    assert isinstance(samples[2], DataError) and "damaged tar header" in str(samples[2])
    ids = sorted(truth)
    for i in (0, 1, 3):
        assert int(samples[i].key) == ids[i]
        np.testing.assert_array_equal(slots[i].view("<i2"), truth[ids[i]][0])


def test_reading_past_a_truncated_end_names_the_key(tmp_path):
    spec, path, truth = open_shard(tmp_path, count=3)
    path.write_bytes(path.read_bytes()[: 2 * spec.record_bytes + PREAMBLE + 100])
    samples, _ = read(spec, path, 0, 3)
    key = f"{sorted(truth)[2]:06d}"
    assert int(samples[1].key) == sorted(truth)[1]
    assert isinstance(samples[2], DataError) and f"key {key}" in str(samples[2]) and "truncated" in str(samples[2])


@pytest.mark.parametrize("threads", [1, 3])
def test_parallel_reads_come_back_in_submission_order(threads):
    reads, got = ParallelReads(threads, depth=2), []
    for i in range(10):
        got += [(tag, r.result()) for tag, r in reads.submit(i, lambda x: x * x, i)]
    got += [(tag, r.result()) for tag, r in reads.drain()]
    reads.close()
    assert got == [(i, i * i) for i in range(10)]


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
