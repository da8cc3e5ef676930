"""Collate stage, across processes: batch buffers in shared memory that DataLoader workers reuse.

A fresh shared-memory batch per batch costs the worker a new segment (every page faulted and zeroed)
and the main process a new mapping (faulted again): ~8.6 ms per 8-track batch, against ~0.6 ms for
writing a reused one.  So the main process makes, once, a ring of shared (B, row) buffers per worker
(`SharedRing`, created before the DataLoader starts its workers, which inherit it or receive it as file
descriptors), maps each once, and keeps it from epoch to epoch.  A worker reads into a free buffer of
its ring (`acquire`) and sends only (worker, buffer index, size, labels, track ids) through the
DataLoader's queue (`RingBatch`); the main process rebuilds the `HostBatch` as a view of its own
mapping (`receive`) and gives the buffer back once the consumer lets go of it and every view of it
(`reclaim`: the storage use count, as `fmashard.data.recycle` does in-process).  One shared byte per
buffer says who has it: FREE -> WORKER (the worker took it) -> MAIN (the main process received it) ->
FREE (the consumer let go).  The worker writes only FREE -> WORKER, and WORKER -> FREE when a pass
starts (`start`: buffers of an abandoned pass that were never received); the main process writes the
other two, so no transition races another; within a worker, its read threads take buffers under a lock.
A worker that finds none free (a consumer hoarding
batches) allocates a fresh shared buffer as before: slower, never stuck.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from fmashard.data.collate import HostBatch

FREE, WORKER, MAIN = 0, 1, 2
_tokens = itertools.count()
_rings: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # main process: token -> ring


@dataclass
class RingBatch:
    """What a worker sends for a batch in its ring: indices and the small columns, no audio."""

    token: int         # which ring (the main process's SharedRing of that worker)
    index: int
    size: int
    labels: np.ndarray
    track_ids: np.ndarray
    skipped: int
    fresh: int = 0     # buffers the worker allocated since its last message because none was free
    audio: torch.Tensor | None = None   # index -1: a batch outside the ring (torch pickles the tensor)

    def pin_memory(self) -> HostBatch:
        """CUDA: the DataLoader's pin thread (in the main process) copies the batch into pinned memory
        from torch's caching host allocator, which keeps it until every non_blocking copy from it is
        done; the ring buffer goes back to the worker at once.  (Registering the ring buffers once
        with cudaHostRegister would save this copy, but then a buffer could go back to the worker
        while a non_blocking copy still reads it: torch tracks no events for memory it did not allocate.)"""
        return _rings[self.token].receive(self).pin_memory()


class SharedRing:
    """`count` shared (batch_size, row) buffers of one worker, and their free flags."""

    def __init__(self, count: int, shape: tuple[int, int], dtype: torch.dtype, clip: int | None = None):
        self.buffers = [_shared_empty(shape, dtype) for _ in range(count)]
        self.flags = torch.zeros(count, dtype=torch.uint8).share_memory_()
        self.allocated = count       # buffers this ring ever made (main process)
        self.clip = shape[1] if clip is None else clip    # samples per row a batch shows (rows are padded)
        self.token = next(_tokens)
        _rings[self.token] = self
        self.fresh = 0               # buffers allocated because none was free (the main side sums the
                                     # workers' counts, which travel with their messages)
        self._index()

    def _index(self) -> None:
        self._lock = threading.Lock()   # a worker's read threads acquire buffers at once
        self._ptrs = {b.data_ptr(): i for i, b in enumerate(self.buffers)}
        self._idle = [_uses(b) for b in self.buffers]   # the storage's use count while nobody holds it

    def __getstate__(self):          # spawn/forkserver: the buffers travel as shared-memory handles
        return {k: self.__dict__[k] for k in ("buffers", "flags", "allocated", "clip", "token")}

    def __setstate__(self, state):
        self.__dict__.update(state, fresh=0)
        self._index()

    # worker side
    def start(self) -> None:
        """A worker's pass begins: what it took and never sent (an abandoned pass, a dropped last
        batch) is free again.  Messages of an earlier pass are never received after this (torch
        discards them when it resets its iterator), so nothing in WORKER is on its way."""
        flags = self.flags.numpy()
        flags[flags == WORKER] = FREE

    def acquire(self, rows: int) -> torch.Tensor:
        """A free buffer (its first `rows` rows), now the worker's; a fresh shared one if none is free."""
        flags = self.flags.numpy()
        with self._lock:
            free = np.flatnonzero(flags == FREE)
            if len(free):
                i = int(free[0])
                flags[i] = WORKER
                return self.buffers[i][:rows]
            self.fresh += 1
        return _shared_empty((rows, self.buffers[0].shape[1]), self.buffers[0].dtype)

    def index_of(self, audio: torch.Tensor) -> int | None:
        return self._ptrs.get(audio.untyped_storage().data_ptr())

    def message(self, batch: HostBatch) -> RingBatch:
        """Indices for a batch whose audio lies in this ring; else (a fresh buffer, skipped rows left
        out) the audio itself, which torch sends as a shared-memory handle."""
        index = self.index_of(batch.audio)
        outside = index is None or batch.audio.storage_offset() != 0
        with self._lock:
            fresh, self.fresh = self.fresh, 0
        return RingBatch(self.token, -1 if outside else index, len(batch), batch.labels.numpy(),
                         batch.track_ids.numpy(), batch.skipped, fresh, batch.audio if outside else None)

    # main side
    def receive(self, msg: RingBatch) -> HostBatch:
        self.fresh += msg.fresh
        if msg.index < 0:
            audio = msg.audio
        else:
            self.flags.numpy()[msg.index] = MAIN
            audio = self.buffers[msg.index][: msg.size, : self.clip]
        return HostBatch(audio, torch.from_numpy(msg.labels), torch.from_numpy(msg.track_ids), msg.skipped)

    def reclaim(self) -> None:
        """Give back to the worker every buffer the consumer no longer references."""
        flags = self.flags.numpy()
        for i in np.flatnonzero(flags == MAIN):
            if _uses(self.buffers[i]) <= self._idle[i]:
                flags[i] = FREE


def _uses(t: torch.Tensor) -> int:
    """References to a tensor's storage: each tensor and view handed out holds one (see recycle.use_count)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _shared_empty(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in a new shared-memory segment (not copied into one, not touched:
    its pages fault in where it is first written, in the worker)."""
    nbytes = shape[0] * shape[1] * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def ring_size(pending: int, prefetch: int = 2) -> int:
    """Buffers per worker: its pending batches, the DataLoader's queue, what the consumer holds
    (the batch in hand, the one the device stage staged, the loop variable) and a little slack."""
    return pending + prefetch + 4
