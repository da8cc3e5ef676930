"""The samples plan: who reads which samples, in which order, into which batch (fmashard.data.plan)."""
from collections import Counter

import numpy as np
import pytest

from fmashard.data.plan import (
    PlanConfig,
    batch_count,
    make_batch_plan,
    round_robin,
    segments_for,
    shard_order,
    split_range,
    worker_plan,
)
from fmashard.format.spec import DatasetSpec, ShardInfo


def spec_with(counts):
    return DatasetSpec(tuple(ShardInfo(f"s{i}.tar", n) for i, n in enumerate(counts)), 4608, 1000)


def samples_of(plan):
    """(shard url, sample index) of every sample a worker plan reads, in stream order."""
    return [(seg.url, seg.first + k) for seg in plan.segments for k in range(seg.count)]


def batches_of(plan):
    """The ordinals of each batch, in emission order, each batch in slot order."""
    out = []
    for buffer, _, size in plan.full:
        ordinals = np.flatnonzero(plan.buffer_of == buffer)
        assert len(ordinals) == size
        out.append(ordinals[np.argsort(plan.slot_of[ordinals])].tolist())
    return out


def sequence(spec, epoch, seed=0):
    """Every (url, index) of an epoch's shard sequence, in order (shards shuffled by (seed, epoch))."""
    return [(spec.shards[i].url, k) for i in shard_order(len(spec.shards), seed, epoch, True)
            for k in range(spec.shards[i].num_samples)]


@pytest.mark.parametrize("counts", [[7, 7, 7, 7, 7], [10, 3, 8, 1, 9, 4], [50]])
@pytest.mark.parametrize("equal", [True, False])
def test_every_sample_once_per_epoch_across_ranks_and_workers(counts, equal):
    spec, cfg = spec_with(counts), PlanConfig(batch_size=4, shuffle_buffer=8, equal_ranks=equal)
    seen, batches_per_rank = Counter(), []
    for rank in range(2):
        nb = 0
        for worker in range(2):
            plan = worker_plan(spec, cfg, 3, rank, 2, worker, 2)
            seen.update(samples_of(plan))
            nb += plan.batches.num_batches
            sizes = [size for _, _, size in plan.batches.full]
            assert sum(sizes) == plan.num_samples and all(s == 4 for s in sizes[:-1])   # only the last short
            assert sorted(o for batch in batches_of(plan.batches) for o in batch) == list(range(plan.num_samples))
        batches_per_rank.append(nb)
    total, order = sum(counts), sequence(spec, 3)
    assert set(seen.values()) == {1}                              # nothing repeated
    if equal:   # equal ranks drop the N % world samples at the end of the epoch's sequence, and only those
        assert set(seen) == set(order[:total - total % 2])
        assert batches_per_rank[0] == batches_per_rank[1]
    else:       # evaluation: every sample exactly once
        assert set(seen) == set(order)


@pytest.mark.parametrize("total", [0, 1, 7, 50, 101])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_rank_and_worker_ranges_are_disjoint_contiguous_and_cover(total, parts):
    ranges = [split_range(total, p, parts, equal=False) for p in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))          # contiguous, no overlap, no gap
    assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1
    equal = [split_range(total, p, parts, equal=True) for p in range(parts)]
    assert all(hi - lo == total // parts for lo, hi in equal)              # the same size on every rank
    assert all(a[1] == b[0] for a, b in zip(equal, equal[1:])) and equal[-1][1] == total - total % parts


def test_a_worker_reads_its_part_of_its_ranks_range_in_sequence_order():
    spec, cfg = spec_with([10, 3, 8, 1, 9, 4]), PlanConfig(batch_size=4, equal_ranks=False)
    order = sequence(spec, 1)
    streamed = [samples_of(worker_plan(spec, cfg, 1, rank, 2, worker, 3)) for rank in range(2) for worker in range(3)]
    assert [s for part in streamed for s in part] == order            # rank 0's workers, then rank 1's


def test_shard_order_changes_per_epoch_and_is_seeded():
    assert shard_order(20, 0, 1, True) == shard_order(20, 0, 1, True)
    assert shard_order(20, 0, 1, True) != shard_order(20, 0, 2, True)
    assert shard_order(20, 0, 1, True) != shard_order(20, 1, 1, True)
    assert sorted(shard_order(20, 0, 1, True)) == list(range(20))
    assert shard_order(5, 0, 1, False) == [0, 1, 2, 3, 4]


def test_segments_start_mid_shard():
    spec = spec_with([5, 5, 5])
    segs = segments_for(spec, [2, 0, 1], 3, 12)
    assert [(s.url, s.first, s.count) for s in segs] == [("s2.tar", 3, 2), ("s0.tar", 0, 5), ("s1.tar", 0, 2)]


def test_scatter_plan_bounds_memory_and_emits_each_batch_once_when_full():
    plan = make_batch_plan(1000, 8, 4, np.random.default_rng(0), drop_last=False)
    slots = set(zip(plan.buffer_of.tolist(), plan.slot_of.tolist()))
    assert len(slots) == 1000                                  # one slot per sample
    buffers = [b for b, _, _ in plan.full]
    assert len(buffers) == len(set(buffers)) == plan.num_batches == 125   # each batch emitted once
    for (_buffer, ready, size), batch in zip(plan.full, batches_of(plan)):
        assert size == 8 and ready == max(batch)                # emitted the moment its last sample arrives
        assert sorted(plan.slot_of[batch].tolist()) == list(range(8))
    assert [ready for _, ready, _ in plan.full] == sorted(ready for _, ready, _ in plan.full)
    live, order = set(), {b: ready for b, ready, _ in plan.full}
    for s in range(1000):                                      # never more than 4 pending buffers
        live.add(int(plan.buffer_of[s]))
        live = {b for b in live if order[b] > s}
        assert len(live) <= 4


@pytest.mark.parametrize("drop_last", [False, True])
def test_only_the_last_batch_is_short_and_drop_last_leaves_it_out(drop_last):
    plan = make_batch_plan(45, 8, 3, np.random.default_rng(2), drop_last=drop_last)
    sizes = [size for _, _, size in plan.full]
    assert sizes == [8] * 5 + ([] if drop_last else [5])
    assert plan.num_batches == batch_count(45, 8, drop_last)
    assert plan.full[-1][1] == (max(batches_of(plan)[-1]) if drop_last else 44)


def test_shuffle_mixes_the_order_and_one_buffer_keeps_it():
    plan = make_batch_plan(64, 8, 8, np.random.default_rng(1), drop_last=False)
    emitted = [o for batch in batches_of(plan) for o in batch]
    assert sorted(emitted) == list(range(64)) and emitted != list(range(64))
    assert batches_of(plan)[0] != list(range(8))
    unshuffled = make_batch_plan(20, 8, 1, np.random.default_rng(0), drop_last=True)
    assert [o for batch in batches_of(unshuffled) for o in batch] == list(range(16))
    assert [r for _, r, _ in unshuffled.full] == [7, 15]


def test_round_robin_resume_position():
    assert round_robin([3, 3], 3) == ([2, 1], 1)
    assert round_robin([3, 1], 3) == ([2, 1], 1)  # worker 1 is done; the cycle skips it
    assert round_robin([2, 2], 4) == ([2, 2], 0)
