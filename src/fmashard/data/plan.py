"""Samples stage: who reads which samples, in which order, into which batch — a pure function of
(seed, epoch, rank, world size, worker, number of workers, batch size, shuffle buffer).

1. Shard order: shuffled per epoch with rng(seed, epoch).
2. The shuffled shards form one sequence of samples; rank r reads a contiguous range of it, so each
   rank reads its own shards.  With `equal_ranks` (training) every rank gets exactly N // world
   samples: the N % world samples at the end of the sequence are dropped for that epoch (a different
   few every epoch, since the shard order changes).  Without it (evaluation) the ranges cover every
   sample and differ in length by at most one.
3. A rank's range is split the same way over its DataLoader workers; our records have a fixed size,
   so a range may start in the middle of a shard (a seek or a Range request).
4. Scatter shuffle: each arriving sample goes to a random free slot of P = shuffle_buffer // B pending
   batches; a batch is emitted the moment it is full and a new empty one takes its place (near the
   end of the epoch only as many as the remaining samples fill, so no partial batches are left over).  Every
   sample is read straight into its final batch slot (one copy), memory is bounded by P*B samples,
   and since the plan depends only on the ordinals, not on the data, a resumed loader rebuilds the
   exact pending state: re-read the few samples that sat in pending batches at the cut (random access)
   and stream on from the cut.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate

import numpy as np

from fmashard.format.spec import DatasetSpec


@dataclass(frozen=True)
class Segment:
    """`count` consecutive samples of one shard, starting at sample `first`."""

    url: str
    first: int
    count: int


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(num_shards))
    return np.random.default_rng([seed, epoch, 0x5A4D]).permutation(num_shards).tolist()


def split_range(total: int, part: int, parts: int, equal: bool) -> tuple[int, int]:
    if equal:
        size = total // parts
        return part * size, (part + 1) * size
    return part * total // parts, (part + 1) * total // parts


def segments_for(spec: DatasetSpec, order: list[int], start: int, stop: int) -> list[Segment]:
    """The samples [start, stop) of the sequence formed by the shards in `order`."""
    segments, offset = [], 0
    for index in order:
        shard = spec.shards[index]
        lo, hi = max(start, offset), min(stop, offset + shard.num_samples)
        if lo < hi:
            segments.append(Segment(shard.url, lo - offset, hi - lo))
        offset += shard.num_samples
        if offset >= stop:
            break
    return segments


@dataclass
class BatchPlan:
    """For each ordinal of a worker's sample sequence: its pending buffer and slot; the batches in
    emission order as (buffer, ordinal after which it is emitted, size).  Every batch is one whole
    buffer; only the last may be short (n % B samples), and `drop_last` leaves it out."""

    buffer_of: np.ndarray
    slot_of: np.ndarray
    full: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def num_batches(self) -> int:
        return len(self.full)

    def cut_ordinal(self, done: int) -> int:
        """Last ordinal that had arrived when `done` batches had been emitted."""
        return self.full[done - 1][1] if done else -1

    def members(self) -> dict[int, np.ndarray]:
        """{buffer: its ordinals in slot order} (a buffer's slots fill in the order its samples arrive)."""
        order = np.argsort(self.buffer_of, kind="stable")
        ids, starts = np.unique(self.buffer_of[order], return_index=True)
        return dict(zip(ids.tolist(), np.split(order, starts[1:])))


def make_batch_plan(n: int, batch_size: int, buffers: int, rng: np.random.Generator,
                    drop_last: bool) -> BatchPlan:
    """Scatter shuffle with an exact ending.  Each sample takes a random free slot (buffers weighted
    by free slots).  A filled buffer is replaced by a new one only while the samples still to come
    outnumber the free slots; the one buffer that will end short (n % B) is the last opened, and it
    offers only its B - short slots.  So the epoch ends with every buffer full but that one: no
    leftovers to gather, no extra copy."""
    buffer_of = np.empty(n, dtype=np.int64)
    slot_of = np.empty(n, dtype=np.int64)
    plan = BatchPlan(buffer_of, slot_of)
    if n == 0:                                 # a worker or rank with no samples (an empty split)
        return plan
    short = -n % batch_size
    count = min(buffers, -(-n // batch_size))
    pending, fill = list(range(count)), [0] * count
    cap = [batch_size] * count
    if count * batch_size - n == short:        # all buffers ever needed exist: the last one ends short
        cap[-1] -= short
    last = None
    next_id, free = count, count * batch_size - (cap[-1] != batch_size) * short
    for s, draw in enumerate(_draws(rng, n)):
        x, j = draw * free, 0          # the slot: walk the (few) buffers by their free slots
        acc = cap[0] - fill[0]
        while acc <= x and j < len(pending) - 1:
            j += 1
            acc += cap[j] - fill[j]
        buffer_of[s], slot_of[s] = pending[j], fill[j]
        fill[j] += 1
        free -= 1
        if fill[j] < cap[j]:
            continue
        if cap[j] == batch_size:
            plan.full.append((pending[j], s, batch_size))
        else:
            last = (pending[j], n - 1, cap[j])   # the short batch goes out last, like a DataLoader's
        left = n - s - 1
        if left - free >= 1:       # more samples to come than free slots: open a new buffer
            pending[j], fill[j], cap[j] = next_id, 0, batch_size
            if left - free < batch_size:
                cap[j] -= short
            free += cap[j]
            next_id += 1
        else:
            del pending[j], fill[j], cap[j]
    if last is not None and not drop_last:
        plan.full.append(last)
    return plan


def _draws(rng: np.random.Generator, n: int, chunk: int = 4096):
    """rng.random(n)'s values, made a chunk at a time (the same values: the generator's stream does not depend on
    how it is cut).  As one list they were 32 bytes a sample: half of a plan's peak memory (benchmarks/README.md
    "Scale")."""
    for at in range(0, n, chunk):
        yield from rng.random(min(chunk, n - at)).tolist()


@dataclass(frozen=True)
class WorkerPlan:
    segments: tuple[Segment, ...]
    batches: BatchPlan
    pending: int = 1          # batch buffers filled at once (the shuffle buffer, in batches)

    @property
    def num_samples(self) -> int:
        return len(self.batches.buffer_of)

    @cached_property
    def _starts(self) -> list[int]:
        """The ordinal each segment starts at, and the plan's end."""
        return list(accumulate((seg.count for seg in self.segments), initial=0))

    def locate(self, ordinal: int) -> tuple[Segment, int]:
        """(segment, sample index within its shard) of an ordinal: a binary search, since the loader's stream
        locates every ordinal of the epoch (a scan from the first segment made an epoch cost
        samples x segments: 100 CPU s per rank of 2 workers at 1,000,000 samples, now 0.74 s; benchmarks/README.md
        "Scale")."""
        if not 0 <= ordinal < self._starts[-1]:
            raise IndexError(ordinal)
        i = bisect_right(self._starts, ordinal) - 1
        seg = self.segments[i]
        return seg, seg.first + ordinal - self._starts[i]


@dataclass(frozen=True)
class PlanConfig:
    batch_size: int = 8
    shuffle: bool = True
    shuffle_buffer: int = 64
    seed: int = 0
    drop_last: bool = False
    equal_ranks: bool = True

    @property
    def pending_buffers(self) -> int:
        """Batch buffers a worker fills at once: the shuffle buffer, in batches (1 without a shuffle)."""
        return max(1, self.shuffle_buffer // self.batch_size) if self.shuffle else 1


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches a plan of n samples emits (every batch full but the last)."""
    return n // batch_size + (1 if n % batch_size and not drop_last else 0)


def worker_samples(spec: DatasetSpec, cfg: PlanConfig, rank: int, world: int, worker: int,
                   num_workers: int) -> int:
    r_lo, r_hi = split_range(spec.num_samples, rank, world, cfg.equal_ranks)
    w_lo, w_hi = split_range(r_hi - r_lo, worker, num_workers, False)
    return w_hi - w_lo


def worker_plan(spec: DatasetSpec, cfg: PlanConfig, epoch: int, rank: int, world: int,
                worker: int, num_workers: int) -> WorkerPlan:
    order = shard_order(len(spec.shards), cfg.seed, epoch, cfg.shuffle)
    r_lo, r_hi = split_range(spec.num_samples, rank, world, cfg.equal_ranks)
    w_lo, w_hi = split_range(r_hi - r_lo, worker, num_workers, False)
    segments = segments_for(spec, order, r_lo + w_lo, r_lo + w_hi)
    n = w_hi - w_lo
    buffers = cfg.pending_buffers
    rng = np.random.default_rng([cfg.seed, epoch, rank, world, worker, num_workers])
    return WorkerPlan(tuple(segments), make_batch_plan(n, cfg.batch_size, buffers, rng, cfg.drop_last), buffers)


def round_robin(counts: list[int], done: int) -> tuple[list[int], int]:
    """A DataLoader takes one batch from each live worker in turn.  After `done` batches: how many
    each worker had delivered, and which worker is next (a resumed DataLoader starts its cycle at
    its worker 0, so the caller rotates worker ids by that amount)."""
    taken, nxt = [0] * len(counts), 0
    while done > 0 and any(t < c for t, c in zip(taken, counts)):
        if taken[nxt] < counts[nxt]:
            taken[nxt] += 1
            done -= 1
        nxt = (nxt + 1) % len(counts)
    return taken, nxt
