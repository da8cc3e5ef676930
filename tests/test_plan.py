from collections import Counter

import numpy as np
import pytest

from fmashard.data.plan import PlanConfig, make_batch_plan, round_robin, segments_for, shard_order, worker_plan
from fmashard.data.sources import DatasetSpec, ShardInfo


def spec_with(counts):
    return DatasetSpec(tuple(ShardInfo(f"s{i}.tar", n) for i, n in enumerate(counts)), 4608, 1000)


def samples_of(plan):
    """(shard url, sample index) of every sample a worker plan reads, in stream order."""
    return [(seg.url, seg.first + k) for seg in plan.segments for k in range(seg.count)]


@pytest.mark.parametrize("counts", [[7, 7, 7, 7, 7], [10, 3, 8, 1, 9, 4], [50]])
@pytest.mark.parametrize("equal", [True, False])
def test_every_sample_once_across_ranks_and_workers(counts, equal):
    spec, cfg = spec_with(counts), PlanConfig(batch_size=4, shuffle_buffer=8, equal_ranks=equal)
    seen, batches_per_rank = Counter(), []
    for rank in range(2):
        nb = 0
        for worker in range(2):
            plan = worker_plan(spec, cfg, 3, rank, 2, worker, 2)
            seen.update(samples_of(plan))
            nb += plan.batches.num_batches
            sizes = [size for _, _, size in plan.batches.full]
            assert sum(sizes) == plan.num_samples and all(s == 4 for s in sizes[:-1])
        batches_per_rank.append(nb)
    total = sum(counts)
    assert max(seen.values()) == 1                     # nothing repeated
    assert len(seen) == (total - total % 2 if equal else total)  # equal ranks drop N % world
    if equal:
        assert batches_per_rank[0] == batches_per_rank[1]


def test_shard_order_changes_per_epoch_and_is_seeded():
    assert shard_order(20, 0, 1, True) == shard_order(20, 0, 1, True)
    assert shard_order(20, 0, 1, True) != shard_order(20, 0, 2, True)
    assert shard_order(5, 0, 1, False) == [0, 1, 2, 3, 4]


def test_segments_start_mid_shard():
    spec = spec_with([5, 5, 5])
    segs = segments_for(spec, [2, 0, 1], 3, 12)
    assert [(s.url, s.first, s.count) for s in segs] == [("s2.tar", 3, 2), ("s0.tar", 0, 5), ("s1.tar", 0, 2)]


def test_scatter_plan_bounds_memory_and_covers_every_ordinal():
    plan = make_batch_plan(1000, 8, 4, np.random.default_rng(0), drop_last=False)
    slots = set(zip(plan.buffer_of.tolist(), plan.slot_of.tolist()))
    assert len(slots) == 1000                                  # one slot per sample
    live, emitted = set(), {b for b, _, _ in plan.full}
    order = {b: ready for b, ready, _ in plan.full}
    for s in range(1000):                                      # never more than 4 pending buffers
        live.add(int(plan.buffer_of[s]))
        live = {b for b in live if b not in order or order[b] > s}
        assert len(live) <= 4
    assert plan.num_batches == 125 and emitted
    unshuffled = make_batch_plan(20, 8, 1, np.random.default_rng(0), drop_last=True)
    assert [r for _, r, _ in unshuffled.full] == [7, 15]


def test_shuffle_mixes_within_the_buffer():
    plan = make_batch_plan(64, 8, 8, np.random.default_rng(1), drop_last=False)
    first_batch = plan.buffer_of == plan.full[0][0]
    assert sorted(np.flatnonzero(first_batch).tolist()) != list(range(8))


def test_round_robin_resume_position():
    assert round_robin([3, 3], 3) == ([2, 1], 1)
    assert round_robin([3, 1], 3) == ([2, 1], 1)  # worker 1 is done; the cycle skips it
    assert round_robin([2, 2], 4) == ([2, 2], 0)
