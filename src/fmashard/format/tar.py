"""The tar layout of an fmashard shard: blocks, padding, the fixed record size, member headers, keys.

A shard is a USTAR archive.  One sample (record) is `{key}.cls`, `{key}.json` (< 512 bytes) and
`{key}.<audio ext>`, each a 512-byte header (mode 0o644, uid/gid 0, empty uname/gname, mtime 0) and its
data padded to whole blocks; the archive ends with two zero blocks.  So every record of a shard takes
`record_bytes(sample_bytes)` bytes and sample i starts at byte `i * record_bytes`.

The key rule (one for the reader, the writer, `verify` and the DALI index): a member name is
`<dir/>base`; its key is the directory part plus `base` up to the first dot, its extension what follows
that dot (`train/000002.pcm` -> `train/000002`, `pcm`), as webdataset and DALI's `wds2idx` group
members.  fmashard writes keys `f"{track_id:06d}"` (one clip per track) or `f"{track_id:06d}_{clip:04d}"`
(`--long-tracks all`: clip `clip` of the track); a key's track id is its last path component up to the
first `_`, as an integer, and its clip number what follows (0 without one).
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass

import numpy as np

from fmashard.errors import DamagedHeaderError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
END_OF_ARCHIVE = bytes(2 * BLOCK)
PREAMBLE = 5 * BLOCK     # .cls header + block, .json header + block, audio header


def padded(size: int) -> int:
    """`size` rounded up to whole tar blocks."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


def record_bytes(sample_bytes: int) -> int:
    """Bytes per record: three headers, one block each for .cls and .json, the padded audio."""
    return PREAMBLE + padded(sample_bytes)


def is_fixed_layout(record_size: int | None, sample_bytes: int) -> bool:
    """Whether records of `record_size` bytes are fmashard's fixed layout for `sample_bytes` of audio."""
    return record_size is not None and record_size - padded(sample_bytes) == PREAMBLE


def shard_bytes(num_samples: int, sample_bytes: int) -> int:
    return num_samples * record_bytes(sample_bytes) + len(END_OF_ARCHIVE)


def records_in(size: int, record_size: int) -> tuple[int, int]:
    """(whole records, bytes left over) in a shard of `size` bytes (the end-of-archive blocks aside)."""
    return divmod(size - len(END_OF_ARCHIVE), record_size)


# ---------------------------------------------------------------------------- keys and member names
def key_of(track_id: int, clip: int | None = None) -> str:
    """`000002` for a whole track, `000002_0003` for its clip 3 (a valid WebDataset key: no dot)."""
    return f"{track_id:06d}" if clip is None else f"{track_id:06d}_{clip:04d}"


def _key_parts(key: str) -> tuple[int, int]:
    track, _, clip = key.rsplit("/", 1)[-1].partition("_")
    try:
        return int(track), int(clip) if clip else 0
    except ValueError:
        return -1, -1


def track_id_of(key: str) -> int:
    """The track id a key stands for (`000002` and `000002_0003` -> 2); -1 for a key that is not ours."""
    return _key_parts(key)[0]


def clip_of(key: str) -> int:
    """The clip number of a key (`000002_0003` -> 3, `000002` -> 0); -1 for a key that is not ours."""
    return _key_parts(key)[1]


def member_name(key: str, ext: str) -> str:
    return f"{key}.{ext}"


def split_member(name: str) -> tuple[str, str]:
    """Member name -> (key, ext) by the key rule: 'dir/000002.pcm' -> ('dir/000002', 'pcm')."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


# ---------------------------------------------------------------------------- member headers
def member_header(name: str, size: int) -> bytes:
    """The deterministic USTAR header fmashard writes for a member."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


@dataclass
class Header:
    key: str
    ext: str
    size: int


def parse_header(block, url: str, last_key: str | None) -> Header | None:
    """Parse a 512-byte USTAR header; None at the end-of-archive zero block."""
    block = bytes(block)
    if block == ZERO_BLOCK:
        return None
    stored = block[148:156].split(b"\0", 1)[0].strip()
    try:
        checksum_ok = int(stored or b"-1", 8) == (int(np.frombuffer(block, np.uint8).sum()) - sum(block[148:156]) + 256)
        size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        checksum_ok, size = False, -1
    if not checksum_ok:
        raise DamagedHeaderError(url, last_key, "damaged tar header (checksum mismatch)")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
    key, ext = split_member(f"{prefix}/{name}" if prefix else name)
    return Header(key, ext, size)
