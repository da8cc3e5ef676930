"""Tar stream stage: parse fmashard records and put each sample's audio straight where it belongs.

A record is `{key}.cls`, `{key}.json`, `{key}.pcm` (or `.f16`), grouped by key as webdataset does.  The
audio member is read with `readinto` directly into the caller's slot (a row of a batch buffer): no
intermediate bytes object, no decoding on the host.  Every problem is a typed error naming the shard
URL and the sample key.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from fmashard import storage
from fmashard.errors import CorruptSampleError, DamagedHeaderError, DataError, StorageError, TruncatedShardError
from fmashard.format.codecs import SHARD_CODECS, get_codec, shard_codec_for_ext
from fmashard.format.tar import BLOCK, PREAMBLE, Header, is_fixed_layout, member_header, padded, parse_header


@dataclass
class Sample:
    key: str
    label: int
    audio_read: bool


class RecordReader:
    """Reads consecutive samples from one shard stream (positioned at a record boundary).

    Records written by fmashard have one layout: `.cls` header and block, `.json` header and block,
    audio header, audio data, padding.  Given `record_bytes`, the reader takes a fast path for them:
    one read for the five small blocks (plus the previous record's padding), checksums of the three
    headers in one numpy call, one `readinto` for the audio.  Anything else (another member order, a
    damaged header, the end of the archive) hands the bytes back to the general member-by-member parser,
    which then reads the rest of the stream and raises the same typed errors as always."""

    def __init__(self, stream, url: str, sample_bytes: int, audio_ext: str, record_bytes: int | None = None):
        self.stream, self.url = stream, url
        self.sample_bytes, self.audio_ext = sample_bytes, audio_ext
        self._hdr = bytearray(BLOCK)
        self._pending: Header | None = None
        self._eof = self._end_block = False
        pad = padded(sample_bytes) - sample_bytes
        self._fast = is_fixed_layout(record_bytes, sample_bytes)
        self._pre = bytearray(pad + PREAMBLE)
        self._views = (memoryview(self._pre)[pad:], memoryview(self._pre))   # without / with owed padding
        self._owed = 0          # padding bytes of the previous record, read together with the next preamble
        self._suffix = ("." + audio_ext).encode()

    def _next_header(self, last_key):
        if self._pending is not None:
            hdr, self._pending = self._pending, None
            return hdr
        if self._eof:
            return None
        got = self.stream.read_exact_into(self._hdr)
        if got == 0:
            self._eof = True   # end of bytes (end of the requested range, or a truncated shard)
            return None
        if got < BLOCK:
            raise TruncatedShardError(self.url, last_key, "shard ends inside a tar header (truncated)")
        hdr = parse_header(self._hdr, self.url, last_key)
        if hdr is None:
            self._eof, self._end_block = True, True
        return hdr

    def _read_member(self, hdr: Header, into=None) -> bytes | None:
        """Read one member's data (into `into` if given) and skip its padding."""
        if into is not None:
            got = self.stream.read_exact_into(into)
            data = None
        else:
            data = self.stream.read(hdr.size) if hdr.size <= 4096 else None
            got = len(data) if data is not None else self.stream.skip(hdr.size)
        if got < hdr.size:
            raise TruncatedShardError(self.url, hdr.key, f"shard ends inside {hdr.key}.{hdr.ext} (truncated)")
        pad = padded(hdr.size) - hdr.size
        if pad and self.stream.skip(pad) < pad:
            raise TruncatedShardError(self.url, hdr.key, "shard ends inside tar padding (truncated)")
        return data

    def read_sample(self, slot) -> Sample | None:
        """Read the next sample; its audio goes into `slot` (a writable buffer of sample_bytes).

        Returns None at the end of the shard.  A damaged sample raises a `DataError` after its
        members were consumed, so the caller may skip it and call again."""
        if self._fast and slot is not None:
            sample = self._read_fast(slot)
            if sample is not None:
                return sample
        first = self._next_header(None)
        if first is None:
            return None
        key, label, audio_read, members = first.key, None, False, []
        hdr = first
        while hdr is not None and hdr.key == key:
            members.append(hdr.ext)
            if hdr.ext == self.audio_ext and hdr.size == self.sample_bytes and slot is not None:
                self._read_member(hdr, into=slot)
                audio_read = True
            elif hdr.ext == "cls":
                label = self._parse_label(self._read_member(hdr), key)
            else:
                self._read_member(hdr)
            hdr = self._next_header(key)
        self._pending = hdr
        return self._check(key, label, audio_read, members)

    def _read_fast(self, slot) -> Sample | None:
        owed, self._owed = self._owed, 0
        view = self._views[1 if owed else 0]
        got = self.stream.read_exact_into(view)
        if got < owed:
            raise TruncatedShardError(self.url, None, "shard ends inside tar padding (truncated)")
        parsed = parse_preamble(bytes(view[owed:got]), self.sample_bytes, self._suffix)
        if parsed is None:   # not the fast layout: the general parser takes over from these bytes
            self._fast = False
            self.stream = _Prefixed(bytes(view[owed:got]), self.stream)
            return None
        key, label = parsed
        if self.stream.read_exact_into(slot) < self.sample_bytes:
            raise TruncatedShardError(self.url, key, f"shard ends inside {key}{self._suffix.decode()} (truncated)")
        self._owed = len(self._pre) - PREAMBLE
        return Sample(key, label, True)

    def _parse_label(self, data, key):
        try:
            return int(data.decode("ascii").strip())
        except (AttributeError, UnicodeDecodeError, ValueError):
            raise CorruptSampleError(self.url, key, "label (.cls) is not an integer") from None

    def _check(self, key, label, audio_read, members) -> Sample:
        complete = audio_read and label is not None
        if not complete and self._eof and not self._end_block:
            raise TruncatedShardError(self.url, key, "shard ends inside this sample (truncated)")
        if self.audio_ext not in members:
            raise CorruptSampleError(self.url, key, f"sample has no .{self.audio_ext} member")
        if not audio_read:
            raise CorruptSampleError(self.url, key, f".{self.audio_ext} has the wrong size "
                                                    f"(expected {self.sample_bytes} bytes)")
        if label is None:
            raise CorruptSampleError(self.url, key, "sample has no .cls label")
        return Sample(key, label, audio_read)


_HEADERS = (0, 2 * BLOCK, 4 * BLOCK)


def check_audio(sample, slot, url: str, crcs, index: int):
    """`sample`, or a CorruptSampleError if the audio in `slot` is not what the build wrote: its crc32
    differs from `crcs[index]` (crcs None: unchecked).  zlib releases the GIL over large buffers."""
    if crcs is None or not isinstance(sample, Sample) or zlib.crc32(slot) == crcs[index]:
        return sample
    return CorruptSampleError(url, sample.key, "audio bytes differ from what the build wrote (crc32 mismatch)")


def parse_preamble(pre: bytes, sample_bytes: int, suffix: bytes) -> tuple[str, int] | None:
    """(key, label) when `pre` holds an intact fmashard preamble for a `sample_bytes` audio member;
    None for anything else (the general parser then decides what is wrong).  Headers that are byte for
    byte what fmashard's writer emits take `_writer_preamble` (no numpy call: issue 27); any other goes
    through `_any_preamble`, which gives the same answer for those."""
    if len(pre) != PREAMBLE:
        return None
    return _writer_preamble(pre, sample_bytes, suffix) or _any_preamble(pre, sample_bytes, suffix)


def _any_preamble(pre: bytes, sample_bytes: int, suffix: bytes) -> tuple[str, int] | None:
    """parse_preamble for any USTAR headers: checksums, sizes and names checked field by field."""
    sums = np.frombuffer(pre, np.uint8).reshape(5, BLOCK)[::2].sum(1, dtype=np.int64).tolist()
    names, sizes = [], []
    for at, total in zip(_HEADERS, sums):
        try:
            stored = int(pre[at + 148:at + 156].split(b"\0", 1)[0].strip() or b"-1", 8)
            size = int(pre[at + 124:at + 136].split(b"\0", 1)[0].strip() or b"-1", 8)
        except ValueError:
            return None
        if stored != total - sum(pre[at + 148:at + 156]) + 256 or pre[at + 345]:
            return None
        names.append(pre[at:at + 100].split(b"\0", 1)[0])
        sizes.append(size)
    key = names[0][:-4]
    if (names[0] != key + b".cls" or names[1] != key + b".json" or names[2] != key + suffix
            or b"." in key.rsplit(b"/", 1)[-1] or not 0 <= sizes[0] <= BLOCK or not 0 <= sizes[1] <= BLOCK
            or sizes[2] != sample_bytes):
        return None
    try:
        label = int(pre[BLOCK:BLOCK + sizes[0]].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return key.decode("utf-8", "replace"), label


_ZEROS = bytes(BLOCK)
_NAME, _SIZE, _CHKSUM = slice(0, 100), slice(124, 135), slice(148, 154)   # what varies from record to record
_writer_headers: dict[int, tuple] = {}


def _writer_template(sample_bytes: int) -> tuple:
    """The writer's three headers, each as (its bytes outside the varying fields, the checksum those
    bytes add up to: all 512 but the checksum field, which counts as spaces)."""
    if sample_bytes not in _writer_headers:
        parts = []
        for size in (0, 0, sample_bytes):
            head = member_header("", size)
            fixed = (head[100:124], head[135:148], head[154:]) if not size else (head[100:148], head[154:])
            varying = sum(head[_SIZE]) if not size else 0
            parts.append((fixed, sum(head) - sum(head[148:156]) - varying + 256))
        _writer_headers[sample_bytes] = tuple(parts)
    return _writer_headers[sample_bytes]


def _writer_preamble(pre: bytes, sample_bytes: int, suffix: bytes) -> tuple[str, int] | None:
    """parse_preamble's answer for headers that are the writer's (`member_header`) in every byte but the
    names, the .cls/.json sizes and the checksums; None for any other (not necessarily damaged)."""
    names, sizes = [], []
    for at, (fixed, fixed_sum) in zip(_HEADERS, _writer_template(sample_bytes)):
        head = pre[at:at + BLOCK]
        varying = len(fixed) == 3
        if fixed != ((head[100:124], head[135:148], head[154:]) if varying else (head[100:148], head[154:])):
            return None
        field = head[_NAME]
        name = field.split(b"\0", 1)[0]
        try:
            size = int(head[_SIZE], 8) if varying else sample_bytes
            stored = int(head[_CHKSUM], 8)
        except ValueError:
            return None
        if (varying and not 0 <= size <= BLOCK) or field[len(name):] != _ZEROS[:100 - len(name)]:
            return None
        if stored != fixed_sum + sum(name) + (sum(head[_SIZE]) if varying else 0):
            return None
        names.append(name)
        sizes.append(size)
    key = names[0][:-4]
    if names != [key + b".cls", key + b".json", key + suffix] or b"." in key.rsplit(b"/", 1)[-1]:
        return None
    try:
        return key.decode("utf-8", "replace"), int(pre[BLOCK:BLOCK + sizes[0]].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


class _Prefixed:
    """A stream with some bytes already taken from it put back in front."""

    def __init__(self, prefix: bytes, stream):
        self.prefix, self.stream = memoryview(prefix), stream

    def read_exact_into(self, buf) -> int:
        mv = memoryview(buf).cast("B")
        n = min(len(mv), len(self.prefix))
        mv[:n], self.prefix = self.prefix[:n], self.prefix[n:]
        return n + (self.stream.read_exact_into(mv[n:]) if n < len(mv) else 0)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[: self.read_exact_into(buf)])

    def skip(self, n: int) -> int:
        k = min(n, len(self.prefix))
        self.prefix = self.prefix[k:]
        return k + (self.stream.skip(n - k) if k < n else 0)


def probe_layout(stream, url: str) -> tuple[int, int, str]:
    """Read the first record's headers: (record_bytes, clip_samples, codec)."""
    hdr_buf, total, audio = bytearray(BLOCK), 0, None
    key = None
    while True:
        if stream.read_exact_into(hdr_buf) < BLOCK:
            break
        hdr = parse_header(hdr_buf, url, key)
        if hdr is None or (key is not None and hdr.key != key):
            break
        key = hdr.key
        total += BLOCK + padded(hdr.size)
        codec = shard_codec_for_ext(hdr.ext)
        if codec is not None:
            audio = (codec, hdr.size)
        stream.skip(padded(hdr.size))
    if audio is None:
        exts = " or ".join(f".{get_codec(name).ext}" for name in SHARD_CODECS)
        raise DataError(url, key, f"first sample has no {exts} member: not an fmashard shard")
    return total, audio[1] // audio[0].bytes_per_sample, audio[0].name


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
