"""Samples stage: `ShardLoader` turns a `DatasetSpec` into host batches of raw audio.

Each batch is one `(B, clip_samples)` int16 (or float16) view of a dense buffer with 64-byte rows
(`fmashard.data.collate`) — pinned when CUDA is present — with labels and track ids.  No float
conversion or windowing happens here: that is the device stage's job.  The loader knows its exact
length per epoch, splits work over ranks and DataLoader workers, and has `state_dict()` /
`load_state_dict()` for exact mid-epoch resume.
"""
from __future__ import annotations

import gc
import os
import queue
import threading
from dataclasses import dataclass, fields

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fmashard.data.collate import BatchBuffers, row_bytes
from fmashard.data.plan import PlanConfig, WorkerPlan, batch_count, round_robin, worker_plan, worker_samples
from fmashard.data.records import RecordLayout, SegmentReader, reads_on_threads
from fmashard.data.shm import RingBatch, SharedRing, ring_size
from fmashard.errors import ErrorPolicy, UserError, log
from fmashard.format.spec import DatasetSpec


@dataclass(frozen=True)
class LoaderConfig(PlanConfig):
    """The plan's fields (batch_size, shuffle, shuffle_buffer, seed, drop_last, equal_ranks) and how to run it."""

    num_workers: int = 0
    on_error: str = "raise"
    rank: int | None = None
    world_size: int | None = None
    pin_memory: bool | None = None
    allow_pipe: bool = False
    check_crc: bool = False    # compare each sample's audio with the crc32 the build recorded (manifest)
    read_threads: int = 2      # threads reading records at once: a few records per job, one preadv
                               # (local) or one ranged request (http/s3) each; 1 = in the loader's thread
    prefetch: int = 2          # num_workers=0 and read_threads=1 (or pipe: URLs): batches a background
                               # thread reads ahead (0 = off); the read threads read ahead themselves

    def __post_init__(self):
        for name in ("batch_size", "shuffle_buffer", "read_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        ErrorPolicy(self.on_error)  # validates the mode

    def plan_config(self) -> PlanConfig:
        return PlanConfig(**{f.name: getattr(self, f.name) for f in fields(PlanConfig)})


def rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's rank and world size: explicit (both given), else torch.distributed's process group,
    else the torchrun environment (RANK, WORLD_SIZE).  The one resolver: train.distributed uses it too."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class WorkerStream:
    """Executes one worker's plan: asks its `SegmentReader` for the samples of each run of the plan (or,
    local shards, of each batch when it is next) and emits batches in plan order.  `start` batches of the
    plan were already delivered (resume)."""

    def __init__(self, spec: DatasetSpec, plan: WorkerPlan, policy: ErrorPolicy, buffers: BatchBuffers,
                 start: int = 0, allow_pipe: bool = False, read_threads: int = 1, check_crc: bool = False):
        self.spec, self.plan, self.policy, self.buffers, self.start = spec, plan, policy, buffers, start
        self._reported = policy.num_skipped
        crcs = {sh.url: sh.crc32 for sh in spec.shards} if check_crc else {}
        self.reader = SegmentReader(plan.segments, RecordLayout.of(spec), policy, buffers, read_threads, crcs,
                                    allow_pipe)

    def __iter__(self):
        with self.reader:
            if self.reader.by_batch:
                yield from self._gathered(self.plan.batches.members())
            else:
                yield from self._batches()

    def _batches(self):
        bp = self.plan.batches
        cut = bp.cut_ordinal(self.start)
        emitted = {b for b, _, _ in bp.full[: self.start]}
        for _ in self._arrivals([s for s in range(cut + 1) if int(bp.buffer_of[s]) not in emitted]):
            pass  # resume: refill the batches that were pending at the cut
        nxt = self.start
        for s in self._arrivals(range(cut + 1, len(bp.buffer_of)), also=cut):
            while nxt < len(bp.full) and bp.full[nxt][1] <= s:
                buffer, _, size = bp.full[nxt]
                nxt += 1
                yield self.buffers.finish(buffer, size, self._skipped_since())
        self.buffers.live.clear()

    def _gathered(self, members: list):
        """The reader's by-batch path (local shards): the batches still to deliver, each read when it is
        next; same batches and order."""
        bp = self.plan.batches
        todo = bp.full[self.start:]
        for n in self.reader.read_batches([(buffer, members[buffer]) for buffer, _, _ in todo], bp.slot_of):
            buffer, _, size = todo[n]
            yield self.buffers.finish(buffer, size, self._skipped_since())

    def _skipped_since(self) -> int:
        now = self.policy.num_skipped
        delta, self._reported = now - self._reported, now
        return delta

    def _arrivals(self, ordinals, also: int | None = None):
        """Read the given ordinals (ascending) into their slots; yield each ordinal once it is
        placed or skipped (first `also`, if given: an ordinal already in place, for a resume).
        Consecutive ordinals of one segment share one stream (one request)."""
        if also is not None and also >= 0:
            yield also
        run: list[int] = []
        where = None   # (segment, first record) of run[0]
        for s in ordinals:
            if run and (s != run[-1] + 1 or self.plan.locate(s)[0] is not where[0]):
                yield from self._read_run(run, *where)
                run = []
            if not run:
                where = self.plan.locate(s)
            run.append(s)
        if run:
            yield from self._read_run(run, *where)

    def _read_run(self, run: list[int], seg, first: int):
        """Consecutive ordinals `run`, records first.. of segment `seg`: read by the reader into their slots."""
        bp, done = self.plan.batches, 0
        for n in self.reader.read(seg.url, first, [(int(bp.buffer_of[s]), int(bp.slot_of[s])) for s in run]):
            yield from run[done:done + n]
            done += n


class _WorkerDataset(IterableDataset):
    """What each DataLoader worker runs (or the main process, with num_workers=0)."""

    def __init__(self, loader: ShardLoader, epoch: int, starts: list[int], rotation: int = 0,
                 rings: list[SharedRing] | None = None):
        self.spec, self.cfg, self.rings = loader.spec, loader.config, rings
        self.rank, self.world = loader.rank, loader.world
        self.pin, self.policy = loader.pin_in_worker, loader.policy
        # (epoch, rotation, starts...): shared, so persistent workers see each pass's values
        self.params = torch.zeros(2 + max(1, self.cfg.num_workers), dtype=torch.int64)
        if rings is not None:
            self.params.share_memory_()
        self.set_pass(epoch, starts, rotation)

    def set_pass(self, epoch: int, starts: list[int], rotation: int) -> None:
        self.params[:] = torch.tensor([epoch, rotation, *starts])

    def __iter__(self):
        info = get_worker_info()
        params = self.params.tolist()
        self.epoch, self.rotation, self.starts = params[0], params[1], params[2:]
        worker, workers = ((info.id + self.rotation) % info.num_workers, info.num_workers) if info else (0, 1)
        plan = worker_plan(self.spec, self.cfg.plan_config(), self.epoch, self.rank, self.world, worker, workers)
        ring = self.rings[info.id] if info is not None and self.rings else None
        if ring is not None:
            ring.start()
        buffers = BatchBuffers(self.spec, self.cfg.batch_size, pin=self.pin, shared=info is not None,
                               pending=plan.pending, samples=plan.num_samples, ring=ring)
        stream = WorkerStream(self.spec, plan, self.policy, buffers, self.starts[worker], self.cfg.allow_pipe,
                              self.cfg.read_threads, self.cfg.check_crc)
        try:
            for batch in stream:   # a worker with a ring sends indices only: the audio is in shared memory
                yield batch if ring is None else ring.message(batch)
        except UserError as exc:
            if info is None:
                raise
            yield exc   # to the main process as itself (torch would re-raise it as a RuntimeError)


_DONE = object()


def read_ahead(iterable, depth: int):
    """Run `iterable` in a background thread, `depth` items ahead.  File and socket reads release the
    GIL, so reading the next batch overlaps with whatever the consumer does (decoding, compute).
    Errors are re-raised in the consumer; abandoning the iterator stops the thread."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)

    thread = threading.Thread(target=produce, name="fmashard-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def require_crcs(spec: DatasetSpec) -> None:
    """check_crc needs the crc32 of every sample, which a manifest of `fmashard build` records."""
    for shard in spec.shards:
        if shard.crc32 is None:
            raise UserError(f"{shard.url}: --check-crc: the build recorded no checksums for this shard (it needs "
                            "the manifest.json of a `fmashard build` that lists crc32s; rebuild, or drop --check-crc)")
        if len(shard.crc32) != shard.num_samples:
            raise UserError(f"{shard.url}: --check-crc: the manifest lists {len(shard.crc32)} checksums for "
                            f"{shard.num_samples} samples")


def freeze_inherited(worker_id: int) -> None:
    """A DataLoader worker's first act: the objects it inherited from the main process leave the garbage
    collector's reach (`gc.freeze`), so the worker's collections never write to, and so copy, their pages.  Without
    it, workers planning 500,000 samples each reached 174 MB of USS in one start of three, 135 MB at most with
    it (benchmarks/README.md "Scale")."""
    gc.freeze()


WORKERS_NOTE = ("--workers {n}: the read threads already do the I/O in this process; workers pay off for "
                "CPU-heavy per-sample work (--check-crc, host-side codecs)")
_noted: list[int] = []


def _note_workers(workers: int) -> None:
    """Once per process, in the log (INFO): workers without CPU-heavy per-sample work only add processes.
    The `train` and `evaluate` commands print the same note on stdout (stderr is kept for errors)."""
    if not _noted:
        _noted.append(workers)
        log.info(WORKERS_NOTE.format(n=workers))


class ShardLoader:
    """Iterable of `HostBatch` for one split: exact epochs, seeded shuffles, exact resume.

    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader: ...
    `len(loader)` is the number of batches this rank gets this epoch (the same on every rank when
    `equal_ranks`).  `state_dict()` taken after k batches and loaded into a fresh loader makes it
    yield exactly batches k+1.. of that epoch, in the same order."""

    def __init__(self, spec: DatasetSpec, config: LoaderConfig = LoaderConfig()):
        self.spec, self.config = spec, config
        self.rank, self.world = rank_world(config.rank, config.world_size)
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside world size {self.world}")
        self.policy = ErrorPolicy(config.on_error)
        if config.check_crc:
            require_crcs(spec)
        elif config.num_workers:
            _note_workers(config.num_workers)
        pin = torch.cuda.is_available() if config.pin_memory is None else config.pin_memory
        if pin and not torch.cuda.is_available():
            raise ValueError("pin_memory=True needs CUDA, which is not available")
        self.pin_in_worker = pin and config.num_workers == 0
        self.pin_by_loader = pin and config.num_workers > 0
        self.epoch, self.delivered, self._resume = 0, 0, 0
        self.skipped_this_epoch = 0
        self.rings: list[SharedRing] | None = None   # num_workers > 0: one shared buffer ring per worker
        self._dataloader, self._dataset, self._busy = None, None, False
        self.label: str | None = None   # what the skip count at the end of a pass calls it (default: epoch N)

    def _new_rings(self) -> list[SharedRing]:
        """Sized like a worker's BatchBuffers: no more rows or pending buffers than its samples fill."""
        cfg, dtype, workers = self.config, getattr(torch, self.spec.dtype), self.config.num_workers
        samples = max(1, *(worker_samples(self.spec, cfg.plan_config(), self.rank, self.world, w, workers)
                           for w in range(workers)))
        rows = min(cfg.batch_size, samples)
        count = ring_size(min(cfg.pending_buffers, -(-samples // rows)))
        return [SharedRing(count, (rows, row_bytes(self.spec) // dtype.itemsize), dtype, self.spec.clip_samples)
                for _ in range(workers)]

    def _worker_pass(self, starts: list[int], rotation: int):
        """(rings, batches) of a pass with DataLoader workers.  The workers, and the shared buffer
        rings they read into (fmashard.data.shm), are made once and kept from epoch to epoch
        (persistent workers; each pass's epoch and starting points reach them in shared memory).
        A second pass running at the same time gets workers and rings of its own."""
        def loader(dataset, persistent):
            return DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers,
                              pin_memory=self.pin_by_loader, worker_init_fn=freeze_inherited,
                              prefetch_factor=2, persistent_workers=persistent)
        if self._busy:
            rings = self._new_rings()
            return rings, iter(loader(_WorkerDataset(self, self.epoch, starts, rotation, rings), False))
        if self._dataloader is None:
            self.rings = self._new_rings()
            self._dataset = _WorkerDataset(self, self.epoch, starts, rotation, self.rings)
            self._dataloader = loader(self._dataset, True)
        self._dataset.set_pass(self.epoch, starts, rotation)   # the workers wait: they read it when told to start
        self._busy = True
        return self.rings, iter(self._dataloader)

    def _counts(self, epoch: int) -> list[int]:
        """Batches per worker this epoch (the same every epoch: only the order changes)."""
        workers, cfg = max(1, self.config.num_workers), self.config.plan_config()
        return [batch_count(worker_samples(self.spec, cfg, self.rank, self.world, w, workers),
                            cfg.batch_size, cfg.drop_last) for w in range(workers)]

    def __len__(self) -> int:
        return sum(self._counts(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._resume = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.delivered, "seed": self.config.seed,
                "rank": self.rank, "world_size": self.world, "num_workers": self.config.num_workers,
                "batch_size": self.config.batch_size, "shuffle_buffer": self.config.shuffle_buffer,
                "num_samples": self.spec.num_samples}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "world_size", "num_workers", "batch_size", "shuffle_buffer", "num_samples"):
            if state.get(key) != mine[key]:
                raise ValueError(f"cannot resume: loader {key} was {state.get(key)}, now {mine[key]}")
        self.epoch, self._resume = int(state["epoch"]), int(state["batches"])
        self.delivered = self._resume

    def __iter__(self):
        counts = self._counts(self.epoch)
        total = sum(counts)
        starts, rotation = round_robin(counts, self._resume)
        self.delivered, self.skipped_this_epoch = self._resume, 0
        rings = None
        if self.config.num_workers == 0:
            dataset = _WorkerDataset(self, self.epoch, starts, rotation)
            pooled = reads_on_threads(RecordLayout.of(self.spec), [sh.url for sh in self.spec.shards],
                                      self.config.read_threads)
            ahead = 0 if pooled else self.config.prefetch   # the read threads read ahead themselves
            source = read_ahead(dataset, ahead) if ahead else iter(dataset)
        else:
            rings, source = self._worker_pass(starts, rotation)
        by_token = {ring.token: ring for ring in rings or ()}
        try:
            for item in source:
                if isinstance(item, UserError):
                    raise item
                # (CUDA: the DataLoader's pin thread has already copied it to pinned memory: RingBatch.pin_memory)
                batch = by_token[item.token].receive(item) if isinstance(item, RingBatch) else item
                self.delivered += 1
                self.skipped_this_epoch += batch.skipped
                yield batch
                del batch, item
                for ring in rings or ():
                    ring.reclaim()
        finally:
            if rings is not None and rings is self.rings:
                self._busy = False
        if self.delivered != total:
            raise RuntimeError(f"loader delivered {self.delivered} batches, planned {total}")
        if self.skipped_this_epoch:  # `label` names the pass for people (epochs count from 1 there)
            log.warning("%s: %d samples skipped (on_error=skip)", self.label or f"epoch {self.epoch + 1}",
                        self.skipped_this_epoch)
        self.epoch, self._resume, self.delivered = self.epoch + 1, 0, 0  # state now points at the next epoch
