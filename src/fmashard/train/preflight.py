"""Checks made before a run starts work: a run that is bound to fail stops with one line, before it reads a
shard or writes a file.

    labelled_split(source, split)       the split, from a manifest with a genre vocabulary
    validation_split(source, training)  the validation split, or none (with a note) when the build has none
    check_clip_length(spec, window)     the clips are long enough for the windows (and the transforms)
    writable_folder(path, "--out")      the folder exists or can be created, and files can be created in it
    check_memory(spec, loader_config)   the loader's batch buffers fit in the memory available now
    check_before_writing(config, ...)   all of a training run's checks, before RUN_DIR is touched
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec, samples_needed
from fmashard.errors import EmptySplitError, UserError


def labelled_split(source: str, split: str):
    """The DatasetSpec of `split`, which must come from a manifest with a genre vocabulary."""
    spec = resolve_source(source, split)
    if spec.manifest is None or not spec.vocabulary:
        raise UserError(f"{source}: training and evaluation need shards with a manifest.json holding the "
                        "genre vocabulary (build them with `fmashard build`)")
    return spec


NO_VALIDATION = "training without validation (last.pt only, no best.pt, validation metrics n/a)"


def validation_split(source: str, training, announce: bool = True):
    """The DatasetSpec of the validation split; when the build has none (`EmptySplitError`), an empty one
    (every validation is then "n/a" and no best.pt is written) and, with `announce`, one note on stdout."""
    try:
        return labelled_split(source, "validation")
    except EmptySplitError as exc:
        if announce:
            print(f"note: {exc}: {NO_VALIDATION}", flush=True)
        return replace(training, shards=(), split="validation")


def check_clip_length(spec, window: WindowSpec, transforms=()) -> None:
    need = samples_needed(window, transforms)
    if spec.clip_samples < need:
        raise UserError(f"clips of {spec.clip_samples / spec.sample_rate:g} s ({spec.clip_samples} samples) are "
                        f"shorter than {window.count} windows of {window.window} samples with overlap "
                        f"{window.overlap:g} need ({need}); lower --windows or --window-seconds")


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


def check_before_writing(config, loader, window: WindowSpec, device, world: int) -> None:
    """What would stop the run later stops it now, before RUN_DIR is touched: a training split that
    gives no step, batch buffers that cannot fit in memory, a RUN_DIR that cannot be written.
    `config`: a TrainConfig; `loader`: its training ShardLoader."""
    if len(loader) == 0:
        n, workers = loader.spec.num_samples, config.workers
        per_rank = f" ({n // world} per rank)" if world > 1 else ""
        over = f" over --workers {workers}" if workers > 1 else ""
        dropped = " (with --windows 1 incomplete batches are dropped)" if loader.config.drop_last else ""
        raise UserError(f"{config.shards}: no training step can be taken: the training split's {n} tracks"
                        f"{per_rank} make no full batch of --batch-size {config.batch_size}{over}{dropped}; "
                        f"lower --batch-size{' or --workers' if over else ''}"
                        + (" or use --windows 2 or more" if dropped else ""))
    rows = min(config.batch_size, loader.spec.num_samples)
    windows = 2 * rows * window.count * window.window * 4 if device.type == "cpu" else 0  # float32, recycled
    check_memory(loader.spec, loader.config, world, extra=windows)
    writable_folder(config.out, "--out")
