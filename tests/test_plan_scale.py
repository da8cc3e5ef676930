"""The plan's cost grows with the corpus no faster than linearly (issue 25; benchmarks/scale.py measures it up to
1,000,000 samples): counted operations and memory, and a generous CPU-time ratio between two sizes, at 2,000
shards and 100,000 samples.  No wall-clock limit anywhere."""
import time
import tracemalloc

import numpy as np
import pytest

from fmashard.data.plan import PlanConfig, Segment, WorkerPlan, _draws, worker_plan
from fmashard.format.spec import DatasetSpec, ShardInfo
from fmashard.format.tar import record_bytes

SMALL, LARGE = (200, 50), (2_000, 50)     # (shards, samples per shard): 10,000 and 100,000 samples


def spec_of(shards: int, per_shard: int) -> DatasetSpec:
    urls = (f"/corpus/training/training-{i:06d}.tar" for i in range(shards))
    return DatasetSpec(tuple(ShardInfo(url, per_shard) for url in urls), record_bytes(1_323_000), 661_500)


class CountingSegment(Segment):
    """A Segment that counts every read of its fields: what finding an ordinal's segment costs."""

    reads = 0

    def __getattribute__(self, name):
        if name in ("url", "first", "count"):
            CountingSegment.reads += 1
        return super().__getattribute__(name)


def counted(plan: WorkerPlan) -> WorkerPlan:
    return WorkerPlan(tuple(CountingSegment(s.url, s.first, s.count) for s in plan.segments), plan.batches,
                      plan.pending)


def segment_reads_per_ordinal(size: tuple[int, int]) -> float:
    """Segment field reads per ordinal when every ordinal of worker 0's epoch is located twice (as the loader's
    stream does: the ordinal's segment and its run's first)."""
    plan = counted(worker_plan(spec_of(*size), PlanConfig(), 0, 0, 1, 0, 2))
    CountingSegment.reads = 0
    for ordinal in range(plan.num_samples):
        plan.locate(ordinal)
        plan.locate(ordinal)
    return CountingSegment.reads / plan.num_samples


def test_locating_an_ordinal_costs_the_same_at_any_corpus_size():
    small, large = segment_reads_per_ordinal(SMALL), segment_reads_per_ordinal(LARGE)
    assert large <= 4                       # a few reads per ordinal, not one per segment before it
    assert large <= 1.5 * small             # 10x the shards: the same cost per ordinal (a scan was 10x)


def test_locate_finds_each_ordinal_in_its_segment():
    plan = worker_plan(spec_of(30, 7), PlanConfig(), 2, 1, 3, 0, 2)
    expected = [(seg, seg.first + k) for seg in plan.segments for k in range(seg.count)]
    assert [plan.locate(ordinal) for ordinal in range(plan.num_samples)] == expected
    with pytest.raises(IndexError):
        plan.locate(plan.num_samples)


def plan_cpu(size: tuple[int, int], rounds: int = 3) -> float:
    """Best CPU seconds of planning both workers of one rank over the whole corpus."""
    spec, best = spec_of(*size), float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for worker in range(2):
            worker_plan(spec, PlanConfig(), 0, 0, 1, worker, 2)
        best = min(best, time.process_time() - start)
    return best


def test_plan_cpu_grows_linearly_with_the_samples():
    ratio = plan_cpu(LARGE) / max(plan_cpu(SMALL), 1e-4)
    assert ratio < 30                       # 10x the samples; linear is ~10x, quadratic would be ~100x


def plan_peak_bytes(size: tuple[int, int]) -> tuple[int, int]:
    """(peak bytes allocated while planning worker 0, its samples)."""
    spec = spec_of(*size)
    tracemalloc.start()
    plan = worker_plan(spec, PlanConfig(), 0, 0, 1, 0, 2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, plan.num_samples


def test_plan_memory_is_a_few_dozen_bytes_per_sample():
    (small, n_small), (large, n_large) = plan_peak_bytes(SMALL), plan_peak_bytes(LARGE)
    assert large / n_large < 48             # 1,000,000 samples on one rank: under 24 MB per worker (was 68 B)
    assert large / small < 1.5 * n_large / n_small


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 10_000])
def test_the_draws_made_a_chunk_at_a_time_are_one_draw_of_n(n):
    assert list(_draws(np.random.default_rng(n), n)) == np.random.default_rng(n).random(n).tolist()


def test_every_rank_reads_its_equal_share_once_at_100000_samples():
    spec, world, workers = spec_of(*LARGE), 8, 2
    seen = np.zeros(spec.num_samples, dtype=np.int64)
    offsets = {s.url: i * LARGE[1] for i, s in enumerate(spec.shards)}
    batches = set()
    for rank in range(world):
        plans = [worker_plan(spec, PlanConfig(), 5, rank, world, w, workers) for w in range(workers)]
        batches.add(sum(p.batches.num_batches for p in plans))
        for seg in (seg for p in plans for seg in p.segments):
            seen[offsets[seg.url] + seg.first: offsets[seg.url] + seg.first + seg.count] += 1
    assert len(batches) == 1                                       # every rank runs the same number of steps
    assert seen.max() == 1 and seen.sum() == spec.num_samples // world * world
