"""Samples stage, reading records: `SegmentReader` is the one home for reading a worker's shards.

Given the records to read and the slots to fill, it decides itself, from the record layout and the storage
backend's capabilities, how: local shards of the fixed layout batch by batch (`read_batches`: record i at
byte i * record_bytes, one read-thread job per batch, `read_batch`), other seekable storage as ranged jobs
on the read threads (`read_threads` > 1), anything else (a pipe, one thread, another layout) as one stream
in the caller's thread (`read`; the stream readers are `tarstream.iter_stream_records`).  It fills the
audio slots and meta rows and hands errors to the policy; the loader only plans and assembles batches.
A batch job makes all its reads (one `preadv` a record: headers to scratch, audio straight into its row,
padding aside; the GIL released) before its header checks: each 1.3 MB copy evicts Python's working set
from the core's cache, so a check right after each read cost ~5x one made after them all
(benchmarks/cold_cache.py).  A record the fast check does not recognise is read again by the general
parser, which names the fault.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from fmashard import storage
from fmashard.data.collate import LABEL, TRACK_ID, VALID
from fmashard.data.tarstream import (
    RecordLayout,
    RecordReader,
    Sample,
    check_audio,
    iter_stream_records,
    parse_preamble,
    stream_records,
)
from fmashard.errors import DataError, StorageError, TruncatedShardError
from fmashard.format.tar import BLOCK, PREAMBLE, track_id_of

STREAM_CHUNK = 16  # http/s3 shards: consecutive records per read-thread job (one ranged request)


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

    def sample(self, index: int, head, slot) -> Sample | DataError:
        """The result of record `index`, whose audio was read into `slot` and whose headers parsed as `head`
        ((key, label), or None: not all its bytes came, or the fast parse did not recognise them, so it
        is read again on its own), with its crc32 checked if the shard has them."""
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
    slots, meta = buffers.rows(buffer, rows)
    pres = [bytearray(PREAMBLE) for _ in records]
    complete = [shard is not None and shard.read_into(index, pre, slot)
                for (shard, index), pre, slot in zip(records, pres, slots)]
    failed = []
    for i, ((shard, index), pre, slot, row) in enumerate(zip(records, pres, slots, rows)):
        if shard is None:
            continue
        head = parse_preamble(bytes(pre), shard.sample_bytes, shard.suffix) if complete[i] else None
        sample = shard.sample(index, head, slot)
        if isinstance(sample, Sample):
            _fill(meta[row], sample)
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
        # by batch: while the consumer holds its batch, threads - 1 batches are read ahead (then one per
        # thread while it waits), so threads + 1 batch buffers take turns and stay in the CPU cache: with 2
        # threads 3 buffers cost 0.95x the CPU per track of 4 (one more read ahead), 16 cost 1.25x
        depth = max(1, self.threads - 1) if self.by_batch else 2 * self.threads
        self.reads = ParallelReads(self.threads, depth=depth)
        return self

    def __exit__(self, *exc) -> None:
        self.reads.close()

    def read_batches(self, batches: list, slot_of):
        """Local shards: `batches` [(buffer, its ordinals in slot order)], one read-thread job per batch
        (`read_batch`), each into a buffer just given back (still in the CPU cache): not into the
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
