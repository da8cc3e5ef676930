"""Samples stage, local shards read batch by batch: the records of one batch, wherever they lie, into its buffer.

Fmashard's fixed layout puts record i of a shard at byte i * record_bytes, so a batch's records are read
in place, one `preadv` each (headers to scratch, audio straight into its row, padding aside; the GIL
released), by one read-thread job per batch (`read_batch`).  All of a job's reads come first and its
header checks after: each 1.3 MB copy evicts Python's working set from the core's cache, so a check
right after each read cost 2-4x one made after them all (benchmarks/README.md, issue 27).  A record the
fast header check does not recognise is read again by the general parser, which names the fault.
"""
from __future__ import annotations

import os

import numpy as np

from fmashard import storage
from fmashard.data.collate import LABEL, TRACK_ID, VALID
from fmashard.data.tarstream import RecordReader, Sample, check_audio, parse_preamble
from fmashard.errors import DataError, StorageError, TruncatedShardError
from fmashard.format.tar import BLOCK, PREAMBLE, track_id_of


class LocalShard:
    """Random access to the records of one local shard file."""

    def __init__(self, url: str, record_bytes: int, sample_bytes: int, audio_ext: str, crcs=None):
        self.url, self.rb, self.sample_bytes, self.audio_ext = url, record_bytes, sample_bytes, audio_ext
        self.crcs = crcs   # the crc32 of each record's audio, to check after the read (None: unchecked)
        self.suffix = ("." + audio_ext).encode()
        self.pad = bytearray(record_bytes - PREAMBLE - sample_bytes)   # tar padding after the audio
        self.file = storage.open_local(url)
        self.fd = self.file.fileno()

    def read_into(self, index: int, pre, slot) -> bool:
        """Record `index` by one preadv: its headers into `pre`, its audio into `slot`; whether all its
        bytes came (the headers are checked by `sample`)."""
        iov = [pre, slot, self.pad] if len(self.pad) else [pre, slot]
        return os.preadv(self.fd, iov, index * self.rb) >= self.rb - len(self.pad)

    def sample(self, index: int, pre, slot, complete: bool) -> Sample | DataError:
        """The result of a record whose preamble and audio were read into `pre` and `slot` (`complete`:
        all its bytes came); a record the fast parse does not recognise is read again on its own."""
        head = parse_preamble(bytes(pre), self.sample_bytes, self.suffix) if complete else None
        try:
            sample = Sample(head[0], head[1], True) if head else self.read(index, slot)
        except DataError as exc:
            sample = exc
        return check_audio(sample, slot, self.url, self.crcs, index)

    def read(self, index: int, slot) -> Sample:
        """Record `index`, its audio copied into `slot`; a `DataError` naming shard and key if bad."""
        at = index * self.rb
        head = parse_preamble(os.pread(self.fd, PREAMBLE, at), self.sample_bytes, self.suffix)
        if head is None:
            return self.read_general(index, slot)
        if os.preadv(self.fd, [slot], at + PREAMBLE) < self.sample_bytes:
            raise TruncatedShardError(self.url, head[0], f"shard ends inside {head[0]}.{self.audio_ext} (truncated)")
        return Sample(head[0], head[1], True)

    def read_general(self, index: int, slot) -> Sample:
        """Any other record: the general parser over its bytes, which names what is wrong."""
        at = index * self.rb
        # one block more: the next record's first header (or the end-of-archive block) ends this one
        with storage.open_stream(self.url, at, at + self.rb + BLOCK) as stream:
            sample = RecordReader(stream, self.url, self.sample_bytes, self.audio_ext).read_sample(slot)
        if sample is None:
            raise TruncatedShardError(self.url, None, f"shard ends after {index} samples; the manifest "
                                                      "promised more (truncated)")
        return sample

    def close(self) -> None:
        self.file.close()


def read_batch(buffers, buffer: int, rows: list, records: list) -> list:
    """A read-thread job: one batch's records ((LocalShard or None, index) each) into the rows `rows` of
    pending buffer `buffer` of `buffers` (a `BatchBuffers`): every read first, then every header check,
    label/track id/valid into the meta rows.  Returns [(position, DataError)] of the records that failed
    (None shards: counted when found, left invalid)."""
    slots, metas = zip(*(buffers.slot(buffer, row) for row in rows))
    pres = [bytearray(PREAMBLE) for _ in records]
    complete = [shard is not None and shard.read_into(index, pre, slot)
                for (shard, index), pre, slot in zip(records, pres, slots)]
    failed = []
    for i, ((shard, index), pre, slot, meta) in enumerate(zip(records, pres, slots, metas)):
        if shard is None:
            continue
        sample = shard.sample(index, pre, slot, complete[i])
        if isinstance(sample, Sample):
            meta[LABEL], meta[TRACK_ID], meta[VALID] = sample.label, track_id_of(sample.key), 1
        else:
            failed.append((i, sample))
    return failed


class LocalShards:
    """The local shards a worker's batches are read from, batch by batch: where each record of
    `batches` (one array of ordinals per batch, in slot order) lies, each shard opened when first needed
    and closed after the last batch that reads from it.  Where things are is worked out once, with numpy,
    so a batch costs a few list lookups in Python (`records`), not a numpy call per record."""

    def __init__(self, segments, batches: list, layout, crcs: dict):
        starts = np.cumsum([0] + [seg.count for seg in segments])
        firsts = np.array([seg.first for seg in segments], dtype=np.int64)
        ordinals = np.concatenate(batches or [[]]).astype(np.int64)
        k = np.searchsorted(starts, ordinals, side="right") - 1
        index = ordinals - starts[k] + firsts[k]                        # record within its shard
        sizes = [len(b) for b in batches]
        pairs = list(zip(k.tolist(), index.tolist()))
        self.where = [pairs[end - n:end] for n, end in zip(sizes, np.cumsum(sizes).tolist())]
        last = np.full(len(segments), -1)
        last[k] = np.repeat(np.arange(len(batches)), sizes)  # the last batch wins
        self.closes = {}
        for shard, b in enumerate(last.tolist()):
            self.closes.setdefault(b, []).append(shard)
        self.segments, self.crcs, self.files = segments, crcs, {}
        self.args = (layout.record_bytes, layout.sample_bytes, layout.audio_ext)

    def records(self, batch: int, policy) -> list:
        """Batch `batch`'s records in slot order: [(LocalShard or None, index)].  A shard that cannot be
        opened raises its StorageError (on_error raise), else costs its records of this and later
        batches, counted once, at the first batch that needs it."""
        return [(self._open(k, batch, policy), i) for k, i in self.where[batch]]

    def _open(self, k: int, batch: int, policy) -> LocalShard | None:
        if k not in self.files:
            url = self.segments[k].url
            try:
                self.files[k] = LocalShard(url, *self.args, self.crcs.get(url))
            except StorageError as exc:
                if policy.mode == "raise":
                    raise
                self.files[k] = None
                lost = sum(kk == k for w in self.where[batch:] for kk, _ in w)
                policy.handle(DataError(url, None, str(exc)), lost=lost)
        return self.files[k]

    def done(self, batch: int) -> None:
        """Batch `batch` and every one before it are read: close the shards no later batch reads from."""
        for k in self.closes.get(batch, ()):
            shard = self.files.pop(k, None)
            if shard is not None:
                shard.close()

    def close(self) -> None:
        for shard in self.files.values():
            if shard is not None:
                shard.close()
        self.files.clear()
