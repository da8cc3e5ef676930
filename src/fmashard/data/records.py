"""Samples stage, reading records: `SegmentReader` is the one home for reading a worker's shards.

Given the records to read and the slots to fill, it decides itself, from the record layout and the storage
backend's capabilities, how: local shards of the fixed layout batch by batch (`read_batches`: one
read-thread job per batch, `fmashard.data.batchread`), other seekable storage as ranged jobs on the read
threads (`read_threads` > 1), anything else (a pipe, one thread, another layout) as one stream in the
caller's thread (`read`).  It fills the audio slots and meta rows and hands errors to the policy; the
loader only plans and assembles batches.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from fmashard import storage
from fmashard.data.batchread import LocalShards, read_batch
from fmashard.data.collate import LABEL, TRACK_ID, VALID
from fmashard.data.tarstream import RecordReader, Sample, check_audio
from fmashard.errors import DamagedHeaderError, DataError, StorageError, TruncatedShardError
from fmashard.format.tar import track_id_of

STREAM_CHUNK = 16  # http/s3 shards: consecutive records per read-thread job (one ranged request)


@dataclass(frozen=True)
class RecordLayout:
    """What a reader needs to know of a split's records: the audio member's size and extension, and the
    bytes of one record (fmashard's fixed layout when `fixed`)."""

    sample_bytes: int
    audio_ext: str
    record_bytes: int
    fixed: bool

    @classmethod
    def of(cls, spec) -> RecordLayout:
        return cls(spec.sample_bytes, spec.audio_ext, spec.record_bytes, spec.fixed_layout)


def iter_stream_records(url: str, first: int, count: int, slot_for, layout: RecordLayout,
                        allow_pipe: bool = False, crcs=None):
    """Records first .. first+count-1 of a shard, over one stream (one ranged request): yields
    (result, n) pairs, result a Sample or the error (a DataError, or the StorageError of a read that
    outlasted its retries) standing for the next n records.  `slot_for(i)` gives record i's slot, asked
    just before it is read; with `crcs`, each sample's audio is checked against them (`check_audio`).
    A damaged header costs its record (the stream is reopened at the next one); a truncated shard or a
    storage error costs the rest (one pair)."""
    record_bytes = layout.record_bytes
    done, end = 0, (first + count) * record_bytes
    while done < count:
        try:
            with storage.open_stream(url, (first + done) * record_bytes, end, allow_pipe=allow_pipe) as stream:
                reader = RecordReader(stream, url, layout.sample_bytes, layout.audio_ext, record_bytes)
                while done < count:
                    slot = slot_for(done)
                    try:
                        sample = reader.read_sample(slot)
                    except (DamagedHeaderError, TruncatedShardError):
                        raise
                    except DataError as exc:       # its members were consumed: the stream goes on
                        sample = exc
                    if sample is None:
                        raise TruncatedShardError(url, None, f"shard ends after {first + done} samples; "
                                                             "the manifest promised more (truncated)")
                    done += 1
                    yield check_audio(sample, slot, url, crcs, first + done - 1), 1
        except DamagedHeaderError as exc:          # resync at the next record boundary
            done += 1
            yield exc, 1
        except (TruncatedShardError, StorageError) as exc:
            yield exc, count - done
            return


def stream_records(url: str, first: int, slots: list, layout: RecordLayout, allow_pipe: bool = False,
                   crcs=None) -> list:
    """A read-thread job: `iter_stream_records` into `slots`, one result per record (an error that
    costs several records is the same object for each)."""
    return [result for result, n in iter_stream_records(url, first, len(slots), slots.__getitem__, layout,
                                                        allow_pipe, crcs) for _ in range(n)]


def reads_on_threads(layout: RecordLayout, urls, read_threads: int) -> bool:
    """Whether a worker's reads go on its read threads, which then read ahead by themselves: only
    records of the fixed layout (`SegmentReader.read_batches`, ranged jobs) on storage that can open at an
    offset (a pipe cannot), and only with more than one thread.  Anything else is read in the loader's
    thread, where read-ahead (`loader.read_ahead`) is what overlaps the reads with the consumer."""
    return layout.fixed and read_threads > 1 and all(storage.backend_for(url).seekable for url in urls)


class SegmentReader:
    """Reads a worker's records into the slots of its `BatchBuffers` (`buffers.slot(buffer, row)`: the audio
    slot and the meta row, filled with label, track id and valid); a record's error goes to
    `policy.handle_read`.  `by_batch`: local shards of the fixed layout, read with `read_batches`;
    otherwise `read`.  Use as a context manager (its reads are settled or cancelled on the way out)."""

    def __init__(self, segments, layout: RecordLayout, policy, buffers, read_threads: int = 1,
                 crcs: dict | None = None, allow_pipe: bool = False):
        self.segments, self.layout, self.policy, self.buffers = segments, layout, policy, buffers
        self.threads, self.crcs, self.allow_pipe = read_threads, crcs or {}, allow_pipe
        self.by_batch = layout.fixed and all(storage.backend_for(seg.url).local for seg in segments)
        self.reads: ParallelReads | None = None

    def __enter__(self) -> SegmentReader:
        # by batch: a batch per thread in flight and one queued, so 4 batch buffers take turns (those read
        # into, the next, the consumer's) and stay in the CPU cache; more measured 1.1-1.25x the CPU per track
        self.reads = ParallelReads(self.threads, depth=(1 if self.by_batch else 2) * self.threads)
        return self

    def __exit__(self, *exc) -> None:
        self.reads.close()

    def read_batches(self, batches: list, slot_of):
        """Local shards: `batches` [(buffer, its ordinals in slot order)], one read-thread job per batch
        (`batchread.read_batch`), each into a buffer just given back (still in the CPU cache): not into the
        ~100 MB of pending buffers as the file goes by, which no cache holds (1.25x the CPU per track:
        benchmarks/README.md, issue 27).  `slot_of[ordinal]`: its row.  Yields each batch's index once read."""
        shards = LocalShards(self.segments, [ordinals for _, ordinals in batches], self.layout, self.crcs)
        try:
            for n, (buffer, ordinals) in enumerate(batches):
                job = (self.buffers, buffer, slot_of[ordinals].tolist(), shards.records(n, self.policy))
                for done, read in self.reads.submit(n, read_batch, *job):
                    yield self._settle_batch(done, read, shards)
            for done, read in self.reads.drain():
                yield self._settle_batch(done, read, shards)
        finally:
            self.reads.close_pending()
            shards.close()

    def _settle_batch(self, n: int, read, shards) -> int:
        """Wait for batch `n`'s job; its failed records to the policy; close the shards it was the last to read."""
        for _, exc in read.result():
            self.policy.handle_read(exc)
        shards.done(n)
        return n

    def read(self, url: str, first: int, rows: list):
        """Records first, first+1, ... of shard `url` into the slots `rows` [(buffer, row)] name, in order;
        yields how many more records are settled (placed, or their error given to the policy) each time."""
        if reads_on_threads(self.layout, [url], self.threads):   # http/s3 (local shards: read_batches)
            yield from self._ranged(url, first, rows)
        else:
            yield from self._stream(url, first, rows)

    def _stream(self, url: str, first: int, rows: list):
        """One stream over the records, read in this thread (pipe: URLs, read_threads=1, other layouts);
        each slot asked for just before its record is read."""
        metas = {}

        def slot_for(i):
            slot, metas[i] = self.buffers.slot(*rows[i])
            return slot
        done = 0
        for result, n in iter_stream_records(url, first, len(rows), slot_for, self.layout, self.allow_pipe,
                                             self.crcs.get(url)):
            if isinstance(result, Exception):
                self.policy.handle_read(result, lost=n)
            else:
                _fill(metas[done], result)
            yield n
            done += n

    def _ranged(self, url: str, first: int, rows: list):
        """The records in jobs of STREAM_CHUNK consecutive ones (one ranged request each) for the read
        threads; results settled in order."""
        job = partial(stream_records, url, layout=self.layout, allow_pipe=self.allow_pipe, crcs=self.crcs.get(url))
        try:
            for at in range(0, len(rows), STREAM_CHUNK):
                slots, metas = zip(*(self.buffers.slot(*row) for row in rows[at:at + STREAM_CHUNK]))
                for done, read in self.reads.submit(metas, job, first + at, list(slots)):
                    yield from self._settle(done, read)
            for done, read in self.reads.drain():
                yield from self._settle(done, read)
        finally:
            self.reads.close_pending()

    def _settle(self, metas, read):
        """Wait for one job; fill in the meta rows of its samples, or hand their errors to the policy
        (one error standing for several lost samples is reported once).  Yields 1 per record."""
        results = read.result()
        for i, (meta, sample) in enumerate(zip(metas, results)):
            if not isinstance(sample, Exception):
                _fill(meta, sample)
            elif i == 0 or results[i - 1] is not sample:
                lost = 1
                while i + lost < len(results) and results[i + lost] is sample:
                    lost += 1
                self.policy.handle_read(sample, lost=lost)
            yield 1


def _fill(meta, sample: Sample) -> None:
    meta[LABEL], meta[TRACK_ID], meta[VALID] = sample.label, track_id_of(sample.key), 1


class ParallelReads:
    """Reads submitted in order, results taken in the same order, at most `depth` in flight, on this
    process's pool of `threads` read threads (`read_pool`)."""

    def __init__(self, threads: int, depth: int):
        self.pool = read_pool(threads) if threads > 1 else None
        self.depth, self.inflight = depth, deque()

    def submit(self, tag, fn, *args) -> list:
        """Queue fn(*args); returns the (tag, future-or-result-thunk) pairs now due, oldest first."""
        self.inflight.append((tag, self.pool.submit(fn, *args) if self.pool else _Now(fn, args)))
        due = []
        while len(self.inflight) > self.depth:
            due.append(self.inflight.popleft())
        return due

    def drain(self) -> list:
        due, self.inflight = list(self.inflight), deque()
        return due

    def close_pending(self) -> None:
        """Cancel what has not started and wait for what has (slots must not be written later)."""
        for _, fut in self.inflight:
            if not fut.cancel():
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - abandoned read; its error no longer matters
                    pass
        self.inflight.clear()

    def close(self) -> None:
        self.close_pending()


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def read_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of `threads` read threads, made once and kept (idle threads cost nothing):
    starting two threads for every pass over the data cost ~0.5 ms of each pass's first batch.  Keyed by
    process id too, as a forked DataLoader worker inherits the dict but not the threads."""
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="fmashard-pread")
    return _POOLS[key]


class _Now:
    """A call made when its result is asked for (no pool: reads happen in the caller's thread)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)

    def cancel(self):
        return True
