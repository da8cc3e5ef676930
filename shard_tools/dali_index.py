"""DALI's webdataset index (`.idx`), in the exact text format NVIDIA's `wds2idx` writes.

    v1.2 <num_samples>
    <ext> <data_offset> <size> <name> <ext> <data_offset> <size> <name> ...   (one line per sample)

Members are listed in tar order and grouped into samples by consecutive key (`fmashard.format.tar`'s key
rule: the name up to the first dot of its last path component), exactly like `wds2idx.IndexCreator`;
`data_offset` is the member's header offset + 512.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from fmashard.format.tar import split_member
from fmashard.storage.atomic import atomic_write

INDEX_VERSION = "v1.2"

# (extension, data offset, size, member name)
IndexEntry = tuple[str, int, int, str]


def group_members(members: Iterable[tuple[str, int, int]]) -> list[list[IndexEntry]]:
    """(name, data_offset, size) in tar order -> one list of entries per sample."""
    samples: list[list[IndexEntry]] = []
    last = None
    for name, offset, size in members:
        key, ext = split_member(name)
        if not key or key.endswith("/"):  # hidden files, as wds2idx
            continue
        if key != last:
            samples.append([])
            last = key
        samples[-1].append((ext, offset, size, name))
    return samples


def format_index(samples: list[list[IndexEntry]]) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in s) for s in samples]
    return "\n".join(lines) + "\n"


def index_of_tar(path) -> str:
    """The index text for an existing tar, read with Python's tarfile (regular files only)."""
    import tarfile

    with tarfile.open(os.fspath(path)) as tar:
        members = [(m.name, m.offset_data, m.size) for m in tar if m.isreg()]
    return format_index(group_members(members))


def write_index_atomic(path, text: str) -> None:
    """Write `path` atomically (`fmashard.storage.atomic_write`), so a present .idx is always complete."""
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
