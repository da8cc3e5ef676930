"""SegmentReader reads a segment one way or another into the same slots; ParallelReads keeps the order."""
import numpy as np
import pytest

from fmashard.data.collate import LABEL, TRACK_ID, VALID, BatchBuffers
from fmashard.data.plan import PlanConfig, worker_plan
from fmashard.data.records import ParallelReads, RecordLayout, SegmentReader, read_pool
from fmashard.data.sources import resolve_source
from fmashard.errors import ErrorPolicy, NotFoundError
from synth_shards import write_synthetic_shards

CLIP = 1001   # odd sample count: every record has tar padding after its audio


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
