"""Write fixed-stride, byte-deterministic shards in the layout of `fmashard.format.tar`.

One sample = `{key}.cls`, `{key}.json` (< 512 bytes), `{key}.<codec ext>`, each a deterministic USTAR
header + data padded to 512 bytes; the archive ends with two zero blocks.  Every sample therefore
takes exactly `record_bytes(sample_bytes)` bytes and sample i starts at byte `i * record_bytes`.  The
writer hashes (sha256) and indexes (DALI) as it writes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from fmashard.format.tar import BLOCK, END_OF_ARCHIVE, member_header, member_name, split_member
from fmashard.storage.atomic import AtomicFile
from shard_tools.dali_index import IndexEntry, format_index, write_index_atomic


def sample_json(meta: dict) -> bytes:
    data = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    if len(data) >= BLOCK:
        raise ValueError(f"sample json must be < {BLOCK} bytes, got {len(data)}: {data[:80]!r}...")
    return data


@dataclass
class ShardResult:
    num_samples: int
    num_bytes: int
    sha256: str
    keys: list[str]
    crc32: list[int]


@dataclass
class ShardWriter:
    """Streams samples into `path.tmp-<pid>`; `commit()` writes the .idx, then moves the tar in place
    (so a present .tar always has its .idx); `abort()` removes the temporary file."""

    path: Path
    index_path: Path
    audio_ext: str
    sample_bytes: int
    keys: list[str] = field(default_factory=list)
    crc32: list[int] = field(default_factory=list)

    def __post_init__(self):
        self._out = AtomicFile(self.path)   # path.tmp-<pid>; fsync + rename on commit
        self._file = self._out.file
        self._sha = hashlib.sha256()
        self._offset = 0
        self._index: list[list[IndexEntry]] = []

    def _write(self, data) -> None:
        self._file.write(data)
        self._sha.update(data)
        self._offset += len(data)

    def _member(self, name: str, data: bytes) -> IndexEntry:
        entry = (split_member(name)[1], self._offset + BLOCK, len(data), name)
        self._write(member_header(name, len(data)))
        self._write(data)
        if len(data) % BLOCK:
            self._write(bytes(BLOCK - len(data) % BLOCK))
        return entry

    def add(self, key: str, label: int, meta: dict, payload: bytes, crc32: int = 0) -> None:
        if len(payload) != self.sample_bytes:
            raise ValueError(f"{key}: audio is {len(payload)} bytes, the shard's records hold {self.sample_bytes}")
        self._index.append(
            [
                self._member(member_name(key, "cls"), str(label).encode("ascii")),
                self._member(member_name(key, "json"), sample_json(meta)),
                self._member(member_name(key, self.audio_ext), payload),
            ]
        )
        self.keys.append(key)
        self.crc32.append(crc32)

    def commit(self) -> ShardResult:
        self._write(END_OF_ARCHIVE)
        write_index_atomic(self.index_path, format_index(self._index))
        self._out.commit()
        return ShardResult(len(self.keys), self._offset, self._sha.hexdigest(), self.keys, self.crc32)

    def abort(self) -> None:
        self._out.abort()
