"""Samples stage, reading records: `SegmentReader` is the one home for reading a worker's shards.

Given the records to read and the slots to fill, it decides itself, from the record layout and the storage
backend's capabilities, how: local shards of the fixed layout batch by batch (`read_batches`: record i at
byte i * record_bytes, a few records per `preadv`, headers to scratch, audio straight into its slot, the
GIL released), other seekable storage as ranged jobs on the read threads (`read_threads` > 1), anything
else (a pipe, one thread, another layout) as one stream in the caller's thread (`read`).  It fills the
audio slots and meta rows and hands errors to the policy; the loader only plans and assembles batches.
Headers are checked after the copy; a record the fast parse does not recognise is read again by the
general parser, which names the fault.
"""
from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from fmashard import storage
from fmashard.data.collate import LABEL, TRACK_ID, VALID
from fmashard.data.tarstream import RecordReader, Sample, parse_preamble
from fmashard.errors import CorruptSampleError, DamagedHeaderError, DataError, StorageError, TruncatedShardError
from fmashard.format.tar import BLOCK, PREAMBLE, track_id_of

READ_CHUNK = 4     # local shards: records of one batch per read-thread job (one preadv each)
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


class LocalShard:
    """Random access to the records of one local shard file."""

    def __init__(self, url: str, record_bytes: int, sample_bytes: int, audio_ext: str, crcs=None):
        self.url, self.rb, self.sample_bytes, self.audio_ext = url, record_bytes, sample_bytes, audio_ext
        self.crcs = crcs   # the crc32 of each record's audio, to check after the read (None: unchecked)
        self.suffix = ("." + audio_ext).encode()
        self.pad = bytearray(record_bytes - PREAMBLE - sample_bytes)   # tar padding after the audio
        self.file = storage.open_local(url)
        self.fd = self.file.fileno()

    def read(self, index: int, slot) -> Sample:
        """Record `index`, its audio copied into `slot`; a `DataError` naming shard and key if bad."""
        at = index * self.rb
        head = parse_preamble(os.pread(self.fd, PREAMBLE, at), self.sample_bytes, self.suffix)
        if head is None:
            return self.read_general(index, slot)
        if os.preadv(self.fd, [slot], at + PREAMBLE) < self.sample_bytes:
            raise TruncatedShardError(self.url, head[0], f"shard ends inside {head[0]}.{self.audio_ext} (truncated)")
        return Sample(head[0], head[1], True)

    def read_many(self, first: int, slots: list) -> list:
        """Records first, first+1, ... into `slots`: a Sample or the DataError of each (one bad
        record costs only itself).  The records are consecutive bytes of the file, so one `preadv`
        scatters them: headers to a scratch buffer, audio straight into the slots, padding aside.
        The headers are checked afterwards; a record that fails is read again on its own."""
        pres = [bytearray(PREAMBLE) for _ in slots]
        iov = []
        for pre, slot in zip(pres, slots):
            iov += [pre, slot, self.pad] if len(self.pad) else [pre, slot]
        got = os.preadv(self.fd, iov, first * self.rb)
        return [self.sample(first + i, pre, slot, got >= (i + 1) * self.rb - len(self.pad))
                for i, (pre, slot) in enumerate(zip(pres, slots))]

    def read_one(self, index: int, pre, slot) -> Sample | DataError:
        """Record `index` by one preadv (its headers into `pre`, reused scratch): `read_many` of one."""
        iov = [pre, slot, self.pad] if len(self.pad) else [pre, slot]
        return self.sample(index, pre, slot, os.preadv(self.fd, iov, index * self.rb) >= self.rb - len(self.pad))

    def sample(self, index: int, pre, slot, complete: bool) -> Sample | DataError:
        """The result of a record whose preamble and audio were read into `pre` and `slot` (`complete`:
        all its bytes came); a record the fast parse does not recognise is read again on its own."""
        head = parse_preamble(bytes(pre), self.sample_bytes, self.suffix) if complete else None
        try:
            sample = Sample(head[0], head[1], True) if head else self.read(index, slot)
        except DataError as exc:
            sample = exc
        return check_audio(sample, slot, self.url, self.crcs, index)

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


class LocalShards:
    """The local shards a worker's batches are read from, batch by batch: where each record of
    `batches` (one array of ordinals per batch, in slot order) lies, each shard opened when first needed
    and closed after the last batch that reads from it.  Where things are is worked out once, with numpy,
    so a batch costs a few list lookups in Python (`jobs`), not a numpy call per record."""

    def __init__(self, segments, batches: list, layout: RecordLayout, crcs: dict):
        starts = np.cumsum([0] + [seg.count for seg in segments])
        firsts = np.array([seg.first for seg in segments], dtype=np.int64)
        ordinals = np.concatenate(batches or [[]]).astype(np.int64)
        k = np.searchsorted(starts, ordinals, side="right") - 1
        index = ordinals - starts[k] + firsts[k]                        # record within its shard
        cuts = np.cumsum([len(b) for b in batches])[:-1]
        self.where = [list(zip(*pair)) for pair in zip(np.split(k, cuts), np.split(index, cuts))]
        last = np.full(len(segments), -1)
        last[k] = np.repeat(np.arange(len(batches)), [len(b) for b in batches])  # the last batch wins
        self.closes = {}
        for shard, b in enumerate(last.tolist()):
            self.closes.setdefault(b, []).append(shard)
        self.segments, self.crcs, self.files = segments, crcs, {}
        self.args = (layout.record_bytes, layout.sample_bytes, layout.audio_ext)
        self.lost: dict[int, int] = {}    # shards that could not be opened: their records still to read

    def jobs(self, batch: int, chunk: int, policy) -> list:
        """Batch `batch`'s records as jobs of `chunk`: (slot of its first, [(LocalShard or None, index)]).
        A shard that cannot be opened raises its StorageError (on_error raise), else costs its records of
        this and later batches, counted once, at the first batch that needs it."""
        where = [(self._open(int(k), batch, policy), int(i)) for k, i in self.where[batch]]
        return [(at, where[at:at + chunk]) for at in range(0, len(where), chunk)]

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
        """Batch `batch` is read: close the shards no later batch reads from."""
        for k in self.closes.get(batch, ()):
            shard = self.files.pop(k, None)
            if shard is not None:
                shard.close()

    def close(self) -> None:
        for shard in self.files.values():
            if shard is not None:
                shard.close()
        self.files.clear()


def read_rows(records: list, slots: list, metas: list) -> list:
    """A read-thread job: records anywhere in local shards ((LocalShard or None, index) each), one
    `preadv` each, audio into `slots`, label/track id/valid into their `metas` rows.  Returns
    [(position, DataError)] of the records that failed (None shards: counted when found, left invalid)."""
    pre, failed = bytearray(PREAMBLE), []
    for i, ((shard, index), slot, meta) in enumerate(zip(records, slots, metas)):
        if shard is None:
            continue
        sample = shard.read_one(index, pre, slot)
        if isinstance(sample, Sample):
            meta[LABEL], meta[TRACK_ID], meta[VALID] = sample.label, track_id_of(sample.key), 1
        else:
            failed.append((i, sample))
    return failed


def check_audio(sample, slot, url: str, crcs, index: int):
    """`sample`, or a CorruptSampleError if the audio in `slot` is not what the build wrote: its crc32
    differs from `crcs[index]` (crcs None: unchecked).  zlib releases the GIL over large buffers."""
    if crcs is None or not isinstance(sample, Sample) or zlib.crc32(slot) == crcs[index]:
        return sample
    return CorruptSampleError(url, sample.key, "audio bytes differ from what the build wrote (crc32 mismatch)")


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
    `policy.handle_read`.  `by_batch`: local
    shards of the fixed layout, read with `read_batches`; otherwise `read`.  Use as a context manager
    (the read threads live inside it)."""

    def __init__(self, segments, layout: RecordLayout, policy, buffers, read_threads: int = 1,
                 crcs: dict | None = None, allow_pipe: bool = False):
        self.segments, self.layout, self.policy, self.buffers = segments, layout, policy, buffers
        self.threads, self.crcs, self.allow_pipe = read_threads, crcs or {}, allow_pipe
        self.by_batch = layout.fixed and all(storage.backend_for(seg.url).local for seg in segments)
        self.reads: ParallelReads | None = None

    def __enter__(self) -> SegmentReader:
        # by batch: one job per thread in flight, so 3 batch buffers take turns (the one read into, the
        # next, the consumer's) and stay in the CPU cache; 4 or more measured 1.1-1.25x the CPU per track
        self.reads = ParallelReads(self.threads, depth=(1 if self.by_batch else 2) * self.threads)
        return self

    def __exit__(self, *exc) -> None:
        self.reads.close()

    def read_batches(self, batches: list, slot_of):
        """Local shards: `batches` [(buffer, its ordinals in slot order)], each read when it is next, into
        a buffer just given back (still in the CPU cache), READ_CHUNK records a job: not into the ~100 MB of
        pending buffers as the file goes by, which the cache no longer holds (1.25x the CPU per track:
        benchmarks/README.md, issue 27).  `slot_of[ordinal]`: its row.  Yields each batch's index once read."""
        shards = LocalShards(self.segments, [ordinals for _, ordinals in batches], self.layout, self.crcs)
        try:
            for n, (buffer, ordinals) in enumerate(batches):
                slots, metas = zip(*(self.buffers.slot(buffer, s) for s in slot_of[ordinals].tolist()))
                for at, records in shards.jobs(n, READ_CHUNK, self.policy):
                    last = n if at + READ_CHUNK >= len(ordinals) else None
                    for tag, read in self.reads.submit(last, read_rows, records, slots[at:at + READ_CHUNK],
                                                       metas[at:at + READ_CHUNK]):
                        yield from self._batch_part(tag, read, shards)
            for tag, read in self.reads.drain():
                yield from self._batch_part(tag, read, shards)
        finally:
            self.reads.close_pending()
            shards.close()

    def _batch_part(self, last, read, shards: LocalShards):
        """Settle one job of read_batches (its failed records to the policy); after a batch's last, its index."""
        for _, exc in read.result():
            self.policy.handle_read(exc)
        if last is not None:
            shards.done(last)
            yield last

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
    """Reads submitted in order, results taken in the same order, at most `depth` in flight."""

    def __init__(self, threads: int, depth: int):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="fmashard-pread") if threads > 1 else None
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
        if self.pool:
            self.pool.shutdown(wait=True)


class _Now:
    """A call made when its result is asked for (no pool: reads happen in the caller's thread)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)

    def cancel(self):
        return True
