"""Large host buffers reused once nobody holds them: a small caching allocator for the CPU.

A fresh large CPU tensor is fresh mmap'd memory: every page faults and is zeroed on first touch (on
the 2-core reference machine ~1,000 faults per batch of float windows, a third of a core).  CUDA's
caching allocator and its pinned-memory host allocator already reuse memory process-wide; this does
the same for unpinned host buffers: `empty(shape, dtype)` hands back a tensor of that shape whose
storage no batch, view or window references any more, else makes a new one.  It keeps at most `keep`
tensors per (shape, dtype); `clear()` lets go of them all.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

ALIGN = 64   # bytes
_lock = threading.Lock()
_cache: dict[tuple, list[tuple]] = {}   # (shape, dtype) -> [(tensor, its bytes as numpy, baseline use count)]


def use_count(t: torch.Tensor) -> int:
    """Tensors sharing `t`'s storage (each tensor and view handed out is one), plus one: the storage
    object made to ask."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def empty(shape, dtype: torch.dtype, keep: int = 8) -> torch.Tensor:
    """An uninitialised CPU tensor: a released one of this shape and dtype, else a new one."""
    return empty_with_bytes(shape, dtype, keep)[0]


def empty_with_bytes(shape, dtype: torch.dtype, keep: int = 8, columns: int | None = None
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """`empty` (its first `columns` columns, if given: the caller's view at no extra op), and its memory
    as a (shape[0], bytes per row) uint8 numpy array, for host code that writes into it: a numpy view
    costs ~3 us where a torch op costs ~20-30 us when the core's cache was just emptied by a 1.3 MB read
    (benchmarks/cold_cache.py).  The memory is numpy's (numpy asks the kernel for transparent huge
    pages) and torch shares it, so the array does not count as a user of the tensor: write into it only
    while you hold the tensor."""
    key = (tuple(shape), dtype)
    with _lock:
        items = _cache.setdefault(key, [])
        for i in range(len(items)):   # the longest held out first: the consumer gives them back in turn
            if use_count(items[i][0]) <= items[i][2]:
                item = items.pop(i)
                break
        else:
            item = _new(key[0], dtype)
        items.append(item)
        if len(items) > keep:        # forget the oldest; whoever holds it keeps it
            del items[0]
        t = item[0]
        # an alias: while it (or any view of it) lives, the count says so
        return (t.view(t.shape) if columns is None else t[:, :columns]), item[1]


def _new(shape: tuple, dtype: torch.dtype) -> tuple:
    """(tensor, its bytes, its use count with nothing handed out) over new numpy memory."""
    rows, nbytes = (shape[0] if shape else 1), torch.Size(shape).numel() * dtype.itemsize
    array = np.empty(nbytes + ALIGN, np.uint8)
    at = -array.ctypes.data % ALIGN
    array = array[at:at + nbytes]   # starts on a cache line, as torch's own allocations do
    t = torch.from_numpy(array).view(dtype).view(shape)   # a view chain keeps its base: the baseline counts it
    return t, array.reshape(rows, -1), use_count(t)


def clear() -> None:
    with _lock:
        _cache.clear()
