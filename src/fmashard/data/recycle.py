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

import torch

_lock = threading.Lock()
_cache: dict[tuple, list[torch.Tensor]] = {}


def unused(t: torch.Tensor) -> bool:
    """True when only the cache's own tensor refers to this storage: every tensor handed out is an
    alias, so it and its views count (the temporary storage object made to ask counts as one)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2


def empty(shape, dtype: torch.dtype, keep: int = 8) -> torch.Tensor:
    """An uninitialised CPU tensor: a released one of this shape and dtype, else a new one."""
    key = (tuple(shape), dtype)
    with _lock:
        items = _cache.setdefault(key, [])
        for i in range(len(items) - 1, -1, -1):   # the most recently released first: warmest in cache
            if unused(items[i]):
                t = items.pop(i)
                break
        else:
            t = torch.empty(key[0], dtype=dtype)
        items.append(t)
        if len(items) > keep:        # forget the oldest; whoever holds it keeps it
            del items[0]
        return t.view(t.shape)       # an alias: while it (or any view of it) lives, the count says so


def clear() -> None:
    with _lock:
        _cache.clear()
