"""Checkpoints and the run folder's records, all written atomically (tmp file + fsync + os.replace).

    RUN_DIR/config.json     the run's TrainConfig (+ what follows from it: window, vocabulary, world size)
    RUN_DIR/metrics.jsonl   one line per epoch
    RUN_DIR/steps.jsonl     track ids of every step (only with --log-batches)
    RUN_DIR/last.pt         everything a resume needs; rewritten every N steps and at every epoch end
    RUN_DIR/best.pt         the same, at the epoch with the best validation track accuracy

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: opening one never runs code.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from fmashard.errors import UserError

CHECKPOINT_FORMAT = "fmashard-checkpoint"
CHECKPOINT_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` (plus the format tag) to `path` atomically: a reader sees the old file or the new one."""
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A checkpoint written by `save_checkpoint`, on the CPU; UserError if it is missing, damaged, not
    one, or lacks one of the `required` keys.  Never unpickles code (weights_only=True)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a checkpoint: give the checkpoint file in it "
                        f"({path / 'best.pt'} or {path / 'last.pt'})")
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
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


# ---------------------------------------------------------------------------------------- run records
def write_json(path: str | Path, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep only the records with `step <= max_step`: on resume, drop what a killed run logged after its
    last checkpoint (those steps are about to run again)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if record.get("step", 0) <= max_step:
            kept.append(record)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    _atomic_write(path, lambda f: f.write(text.encode()))


# ---------------------------------------------------------------------------------------- run folder
# What makes two runs the same run: a RUN_DIR whose config.json differs in these holds another run.
IDENTITY_FIELDS = ("shards", "model", "batch_size", "lr", "seed", "window_seconds", "windows", "overlap",
                   "random_crop", "amp", "amp_dtype", "shuffle_buffer")
RESUME_FIELDS = tuple(f for f in IDENTITY_FIELDS if f != "shards")  # the shards may move (local -> s3)
RESUME_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "batches_done", "best", "train_seconds",
               "train_totals", "loader", "rng")


def identity_of(values: dict, fields=IDENTITY_FIELDS) -> dict:
    """The fields of a TrainConfig (as a dict) that make a run what it is; local shard paths made absolute."""
    d = {name: values.get(name) for name in fields}
    if isinstance(d.get("shards"), str) and "://" not in d["shards"]:
        d["shards"] = os.path.abspath(d["shards"])
    return d


def prepare_run_dir(config, run_dir: Path, vocabulary, is_main: bool) -> dict | None:
    """Check RUN_DIR against this run (a TrainConfig); the last.pt state to resume from, or None for a
    fresh start.  Every rank checks (read-only, so all fail alike); then rank 0 drops the records a killed
    run wrote after its last.pt (or all records, for a fresh start)."""
    from fmashard.train.distributed import barrier  # noqa: PLC0415

    config_path, last = run_dir / "config.json", run_dir / "last.pt"
    state = None
    if config.resume and last.is_file():
        state = load_checkpoint(last)
        check_resume(config, state, vocabulary, last)
        require_keys(state, last, RESUME_KEYS)
    elif config_path.is_file():
        recorded = read_json(config_path)
        if not isinstance(recorded, dict) or not isinstance(recorded.get("train", {}), dict):
            raise UserError(f"{config_path}: not a run config (a JSON object with a \"train\" object); "
                            "choose another --out")
        mine, theirs = identity_of(config.as_dict()), identity_of(recorded.get("train", {}))
        diffs = [f"{k}={theirs[k]!r} (now {mine[k]!r})" for k in IDENTITY_FIELDS if theirs[k] != mine[k]]
        if diffs:
            raise UserError(f"{run_dir} holds another run ({', '.join(diffs)}); choose another --out")
        if last.is_file() and not config.resume:
            raise UserError(f"{run_dir} already holds this run (with last.pt); pass --resume to continue it "
                            "or choose another --out")
    barrier()
    if is_main:
        if config.resume and state is None:
            print(f"--resume: no {last} yet, starting from scratch", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "steps.jsonl"):
            if state is not None:
                truncate_jsonl(run_dir / name, state["step"])
            elif (run_dir / name).exists():
                (run_dir / name).unlink()
    return state


def check_resume(config, state: dict, vocabulary, path: Path) -> None:
    if state.get("model_name") != config.model:
        raise UserError(f"--resume: {path} is a {state.get('model_name')!r} run, not {config.model!r} "
                        "(resume with the same --model or choose another --out)")
    if tuple(state.get("vocabulary", ())) != tuple(vocabulary):
        raise UserError(f"--resume: {path} was trained on the genres {state.get('vocabulary')}, "
                        f"but the shards have {list(vocabulary)}")
    theirs, mine = identity_of(state.get("config", {}), RESUME_FIELDS), identity_of(config.as_dict(), RESUME_FIELDS)
    diffs = [f"{k}={theirs[k]!r} (now {mine[k]!r})" for k in RESUME_FIELDS if theirs[k] != mine[k]]
    if diffs:
        raise UserError(f"--resume: {path} was trained with {', '.join(diffs)}; resume with the same settings")
