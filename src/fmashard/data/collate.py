"""Collate stage: the host batch buffers samples are read into, and the batches handed out.

A batch is one (B, row) buffer of raw int16 (or float16) audio, row = clip_samples rounded up to 64
bytes, pinned when CUDA is present; `HostBatch.audio` is its (B, clip_samples) view.  Buffers are
reused once the consumer lets go of them (`fmashard.data.recycle`), so steady state allocates nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from fmashard.data import recycle
from fmashard.format.spec import DatasetSpec

ROW_ALIGN = 64   # bytes: each batch row starts on a cache line (see BatchBuffers)

# A batch's meta rows: one int64 row per slot, its columns named here (the reader fills a slot's row as
# `meta[LABEL], meta[TRACK_ID], meta[VALID] = label, track_id, 1`; a slot left VALID 0 was skipped).
META_COLUMNS = ("label", "track_id", "valid")
LABEL, TRACK_ID, VALID = range(len(META_COLUMNS))


@dataclass
class HostBatch:
    audio: torch.Tensor        # (B, clip_samples) int16 or float16, raw from the shard; rows may be
    labels: torch.Tensor       # padded to 64 bytes (audio.stride(0) >= clip_samples): see rows()
    track_ids: torch.Tensor    # (B,) int64 each
    skipped: int = 0           # samples skipped (on_error="skip") since the previous batch

    def rows(self) -> torch.Tensor:
        """The audio with its row padding: one dense block, what a host-to-device copy should move
        (then slice [:, :clip_samples] on the device)."""
        a = self.audio
        return a.as_strided((a.shape[0], a.stride(0)), (a.stride(0), 1))

    def pin_memory(self):
        return replace(self, audio=self.rows().pin_memory()[:, : self.audio.shape[1]])

    def __len__(self):
        return self.audio.shape[0]


def row_bytes(spec: DatasetSpec) -> int:
    """Bytes of one batch row: a sample's audio rounded up to 64 bytes (see BatchBuffers._allocate)."""
    return -(-spec.sample_bytes // ROW_ALIGN) * ROW_ALIGN


class BatchBuffers:
    """Pending batch buffers, allocated on first use (recycled ones when the consumer let go of
    them: no page faults, no zeroing) and handed out when full.  `samples`: how many samples will ever
    be read into them (buffers have no more rows than that, whatever the batch size)."""

    def __init__(self, spec: DatasetSpec, batch_size: int, pin: bool, shared: bool, pending: int = 8,
                 samples: int | None = None, ring=None):
        if samples is not None:
            batch_size = max(1, min(batch_size, samples))
            pending = max(1, min(pending, -(-samples // batch_size)))
        self.spec, self.batch_size, self.pin, self.shared = spec, batch_size, pin, shared
        self.ring = ring          # a DataLoader worker's `fmashard.data.shm.SharedRing`, if any
        self.dtype = getattr(torch, spec.dtype)
        self.live: dict[int, tuple] = {}
        self.keep = pending + 8   # pending buffers, the read-ahead queue and what the consumer holds

    def _allocate(self) -> tuple[torch.Tensor, np.ndarray]:
        """A (B, row) buffer, row = clip_samples rounded up to 64 bytes, as its (B, clip_samples) view, and
        its bytes as numpy (B, row bytes) for the readers to write into.  The audio of every record sits
        64-byte aligned in the shard file, and the kernel's page-cache copy runs at full speed only
        when the destination is aligned alike: unpadded rows (1,323,000 bytes: 8 bytes short of a
        multiple of 64) measured up to 2x slower (benchmarks/README.md)."""
        shape = (self.batch_size, row_bytes(self.spec) // self.dtype.itemsize)
        if self.ring is not None:  # a worker: a released buffer of its shared ring (fmashard.data.shm)
            audio = self.ring.acquire(self.batch_size)
        elif self.shared:         # it leaves for the main process: a fresh shared-memory buffer
            audio = torch.empty(shape, dtype=self.dtype).share_memory_()
        elif self.pin:            # torch's caching host allocator reuses pinned memory
            audio = torch.empty(shape, dtype=self.dtype, pin_memory=True)
        else:                     # numpy's bytes of a recycled buffer: one torch op per batch
            return recycle.empty_with_bytes(shape, self.dtype, keep=self.keep, columns=self.spec.clip_samples)
        return audio[:, : self.spec.clip_samples], audio.view(torch.uint8).numpy()

    def slot(self, buffer: int, slot: int):
        """(writable bytes of the audio row, its meta row) of a slot of a pending buffer."""
        live = self._live(buffer)
        return live[2][slot], live[1][slot]

    def rows(self, buffer: int, slots: list) -> tuple[list, np.ndarray]:
        """([writable bytes of each slot's audio row], the buffer's meta rows, (B, META_COLUMNS)) of a
        pending buffer: what a reader of a whole batch needs, in one call."""
        live = self._live(buffer)
        return [live[2][s] for s in slots], live[1]

    def _live(self, buffer: int) -> tuple:
        live = self.live.get(buffer)
        if live is None:
            audio, rows = self._allocate()
            meta = np.zeros((self.batch_size, len(META_COLUMNS)), dtype=np.int64)
            live = self.live[buffer] = (audio, meta, rows[:, : self.spec.sample_bytes])
        return live

    def take(self, buffer: int, size: int) -> tuple[torch.Tensor, np.ndarray]:
        audio, meta, _ = self.live.pop(buffer)
        return (audio if size == len(audio) else audio[:size]), meta[:size]

    def finish(self, buffer: int, size: int, skipped: int) -> HostBatch:
        """The HostBatch of a filled pending buffer (`take`, then `finish_batch`)."""
        return finish_batch(*self.take(buffer, size), skipped)


def finish_batch(audio: torch.Tensor, meta: np.ndarray, skipped: int) -> HostBatch:
    """A HostBatch from a filled buffer and its meta rows (META_COLUMNS); rows whose sample was
    skipped (VALID 0) are left out."""
    if not meta[:, VALID].all():
        valid = meta[:, VALID].astype(bool)
        audio, meta = audio[torch.from_numpy(valid)], meta[valid]
    return HostBatch(audio, torch.from_numpy(meta[:, LABEL].copy()), torch.from_numpy(meta[:, TRACK_ID].copy()),
                     skipped)
