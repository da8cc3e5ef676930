"""The run folder: what it holds, and whether a run may write to it (the same run resumed, a fresh one,
or another run's folder: refused).

    RUN_DIR/config.json     the run's TrainConfig (+ what follows from it: window, vocabulary, world size)
    RUN_DIR/metrics.jsonl   one line per epoch
    RUN_DIR/steps.jsonl     track ids of every step (only with --log-batches)
    RUN_DIR/last.pt         everything a resume needs; rewritten every N steps and at every epoch end
    RUN_DIR/best.pt         the same, at the epoch with the best validation track accuracy

JSON files are written atomically (`fmashard.storage.atomic`); the .jsonl records are appended, and a
resume drops the lines a killed run wrote after its last.pt.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fmashard import storage
from fmashard.errors import UserError
from fmashard.storage.atomic import atomic_write
from fmashard.train.checkpoint import load_checkpoint, require_keys
from fmashard.train.distributed import barrier

# What makes two runs the same run: a RUN_DIR whose config.json differs in these holds another run.
IDENTITY_FIELDS = ("shards", "model", "batch_size", "lr", "seed", "window_seconds", "windows", "overlap",
                   "random_crop", "amp", "amp_dtype", "shuffle_buffer", "augment", "features", "optimizer",
                   "weight_decay", "lr_schedule", "warmup")
RESUME_FIELDS = tuple(f for f in IDENTITY_FIELDS if f != "shards")  # the shards may move (local -> s3)
RESUME_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "batches_done", "best", "train_seconds",
               "train_totals", "loader", "rng")


# ---------------------------------------------------------------------------------------- records
def write_json(path: str | Path, obj) -> None:
    """The run folder's JSON style (indent 2, sorted keys) through the one writer, `storage.write_json`."""
    storage.write_json(path, obj, indent=2, sort_keys=True)


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
    with atomic_write(path) as f:
        f.write(text.encode())


# ---------------------------------------------------------------------------------------- policy
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
    config_path, last = run_dir / "config.json", run_dir / "last.pt"
    state = None
    if config.resume and last.is_file():
        state = load_checkpoint(last)
        check_resume(config, state, vocabulary, last)
        require_keys(state, last, RESUME_KEYS)
    elif config_path.is_file():
        check_same_run(config, run_dir, read_json(config_path))
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


def check_same_run(config, run_dir: Path, recorded) -> None:
    """RUN_DIR's config.json (`recorded`) must describe this run."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train", {}), dict):
        raise UserError(f"{run_dir / 'config.json'}: not a run config (a JSON object with a \"train\" object); "
                        "choose another --out")
    mine, theirs = identity_of(config.as_dict()), identity_of(recorded.get("train", {}))
    diffs = [f"{k}={theirs[k]!r} (now {mine[k]!r})" for k in IDENTITY_FIELDS if theirs[k] != mine[k]]
    if diffs:
        raise UserError(f"{run_dir} holds another run ({', '.join(diffs)}); choose another --out")


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
