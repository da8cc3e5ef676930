"""Checkpoints: last.pt and best.pt of a run folder (`fmashard.train.run_dir`), written atomically
(`fmashard.storage.atomic`), with the RNG states a resume restores and the window they were trained on.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: opening one never runs code.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fmashard.data.transforms import NormalizeTracks, RandomCrop
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from fmashard.storage.atomic import atomic_write

CHECKPOINT_FORMAT = "fmashard-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` (plus the format tag) to `path` atomically: a reader sees the old file or the new one."""
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A checkpoint written by `save_checkpoint`, on the CPU; UserError if it is missing, damaged, not
    one, or lacks one of the `required` keys.  Never unpickles code (weights_only=True)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint: give the checkpoint file in it "
                        f"({path / 'best.pt'} or {path / 'last.pt'})")
    if not path.is_file():
        last = path.with_name("last.pt")
        hint = f" ({last} is there: a run without validation tracks writes no best.pt)" if \
            path.name == "best.pt" and last.is_file() else ""
        raise UserError(f"{path}: no such checkpoint{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors have many types
        raise UserError(f"{path}: unreadable checkpoint ({_load_failure(exc)}): damaged, cut short or not "
                        "written by fmashard") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an fmashard checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint version {state.get('version')}, this fmashard reads {CHECKPOINT_VERSION}")
    require_keys(state, path, required)
    return state


def require_keys(state: dict, path: Path, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise UserError(f"{path}: not a complete fmashard checkpoint (no {', '.join(missing)})")


def _load_failure(exc: Exception) -> str:
    """What torch.load found wrong, without its advice (retrying with weights_only=False would run
    whatever code the file holds: never right for a file that failed to load safely)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif "legacy .tar format" in text:
        return "not a zip archive, the format torch.save writes"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    if not first or "weights_only" in first:
        return type(exc).__name__
    return first[:200]


# ---------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """torch, numpy and python RNG states, as tensors and plain numbers (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": version, "internal": list(internal), "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------------------------------- the window
AUGMENTATION_KEYS = ("random_crop", "normalize")   # what the "window" entry also records of the transforms


def window_record(window: WindowSpec, transforms=()) -> dict:
    """The "window" entry of checkpoints and config.json: the window geometry, and which of the
    transforms trained on it (the keys a window had when augmentations were flags, kept for old readers)."""
    return {**asdict(window), "random_crop": any(isinstance(t, RandomCrop) for t in transforms),
            "normalize": any(isinstance(t, NormalizeTracks) for t in transforms)}


def window_of(record: dict) -> WindowSpec:
    """The WindowSpec of a "window" entry (its augmentation keys dropped: evaluation uses none).
    TypeError when the entry is not one."""
    if not isinstance(record, dict):
        raise TypeError(f"expected a mapping, got {type(record).__name__}")
    return WindowSpec(**{k: v for k, v in record.items() if k not in AUGMENTATION_KEYS})


# ---------------------------------------------------------------------------------------- best.pt
BEST_METRIC = "val_track_acc_mean"   # validation track accuracy by mean logits (steadier than the vote)
BEST_EPOCHS = 3                      # ... averaged over the epoch and the two complete epochs before it
BEST_RULE = ("best.pt: the epoch with the highest validation track accuracy by mean logits averaged over it and "
             "the 2 epochs before it (fewer at the start); a tie goes to the lower validation loss")


def finite_loss(record: dict) -> bool:
    """Whether an epoch's validation loss is a finite number (an epoch whose loss is not never makes best.pt)."""
    loss = record.get("val_loss")
    return loss is not None and math.isfinite(loss)


def best_candidate(record: dict, recent: list[float]) -> dict | None:
    """The best.pt entry an epoch's metrics record would make (None without validation tracks, or when its
    validation loss is not finite); `recent`:
    BEST_METRIC of the complete epochs before it, oldest first."""
    value = record.get(BEST_METRIC)
    if value is None or not finite_loss(record):
        return None
    window = ([*recent, value])[-BEST_EPOCHS:]
    return {"metric": f"{BEST_METRIC} mean of last {BEST_EPOCHS} epochs", "score": sum(window) / len(window),
            "val_loss": record["val_loss"], BEST_METRIC: value, "val_track_acc_vote": record["val_track_acc_vote"],
            "epoch": record["epoch"], "step": record["step"]}


def is_better(candidate: dict | None, best: dict | None, eps: float = 1e-9) -> bool:
    """BEST_RULE: a higher score, or the same score (within `eps`) and a lower validation loss.  A best
    entry without a score (a checkpoint of an older fmashard) is always replaced."""
    if candidate is None:
        return False
    if best is None or "score" not in best:
        return True
    if abs(candidate["score"] - best["score"]) > eps:
        return candidate["score"] > best["score"]
    return candidate["val_loss"] < best["val_loss"]


def select_best(best: dict | None, recent: list[float], record: dict, complete: bool):
    """After an epoch's metrics `record`: (the best.pt entry, the BEST_METRIC of the last complete epochs,
    whether this epoch is the new best.pt).  An incomplete epoch (max_steps) is scored but not kept in
    `recent` (its resumed, complete record follows)."""
    candidate = best_candidate(record, recent)
    improved = is_better(candidate, best)
    if complete and record.get(BEST_METRIC) is not None and finite_loss(record):
        recent = [*recent, record[BEST_METRIC]][-BEST_EPOCHS:]
    return (candidate if improved else best), recent, improved
