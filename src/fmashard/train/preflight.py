"""Checks made before a run starts work: a run that is bound to fail stops with one line, before it reads a
shard or writes a file.

    writable_folder(path, "--out")     the folder exists or can be created, and files can be created in it
    check_memory(spec, loader_config)  the loader's batch buffers fit in the memory available now
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fmashard.errors import UserError


def writable_folder(path: str | Path, flag: str) -> Path:
    """`path` as a Path, if it is a folder that files can be created in, or one that can be made (its
    nearest existing ancestor is a writable folder).  Creates nothing that stays."""
    path = Path(path)
    try:
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            if existing == path:
                raise UserError(f"{flag} {path}: is a file, not a folder")
            raise UserError(f"{flag} {path}: {existing} is not a folder")
        fd, probe = tempfile.mkstemp(prefix=".fmashard-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})") from None
    return path


def available_memory() -> int:
    import psutil  # noqa: PLC0415

    return int(psutil.virtual_memory().available)


def loader_bytes(spec, cfg, world: int = 1) -> int:
    """The most host memory the batch buffers of one rank's loader hold at once: every worker's pending
    (shuffle) buffers and the batches queued between the workers and the training step.  Buffers hold
    at most the tracks a worker has, so a batch size above the split's size costs nothing extra."""
    from fmashard.data.collate import row_bytes  # noqa: PLC0415

    workers = max(1, cfg.num_workers)
    per_worker = _ceil(_ceil(spec.num_samples, world), workers)
    rows = max(1, min(cfg.batch_size, per_worker))
    pending = max(1, cfg.shuffle_buffer // cfg.batch_size) if cfg.shuffle else 1
    pending = min(pending, max(1, _ceil(per_worker, cfg.batch_size)))
    queued = cfg.prefetch + 2 + 2 * cfg.num_workers   # read ahead / DataLoader prefetch, staged, in use
    return (workers * pending + queued) * rows * row_bytes(spec)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def check_memory(spec, cfg, world: int = 1, extra: int = 0) -> None:
    """UserError when the loader's buffers (plus `extra` bytes) cannot fit in the memory available."""
    need, have = loader_bytes(spec, cfg, world) + extra, available_memory()
    if need > have:
        raise UserError(f"--batch-size {cfg.batch_size}, --shuffle-buffer {cfg.shuffle_buffer}, --workers "
                        f"{cfg.num_workers}: {spec.split or 'the'} batches of {spec.clip_samples}-sample clips "
                        f"need {need / 1e9:.1f} GB of memory, more than the {have / 1e9:.1f} GB available; "
                        "lower --batch-size, --shuffle-buffer or --workers")
