"""Bad input to `train` and `evaluate`: one line `error: ...`, exit 2, no traceback, and nothing written.
(Issue 11: worker errors, unwritable or misplaced run folders, impossible sizes, corrupt checkpoints.)"""
from __future__ import annotations

import array
import fcntl
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run_fmashard
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from fmashard.errors import TruncatedShardError
from fmashard.train import TrainConfig, train
from synth_shards import write_synthetic_shards
from test_checkpoint import TINY, damaged_checkpoint, write_run_shards, write_untrained_checkpoint

TINY_ARGS = ["--model", "soundnet-large", "--window-seconds", "0.1", "--windows", "2", "--batch-size", "2"]


def truncate_first_shards(src: Path, dst: Path) -> Path:
    """A copy of `src` whose first shard of every split is cut in half."""
    shutil.copytree(src, dst)
    for split in ("training", "validation", "test"):
        shard = dst / split / f"{split}-000000.tar"
        os.truncate(shard, shard.stat().st_size // 2)
    return dst


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny shards, a copy with truncated shards, and an untrained checkpoint for their vocabulary."""
    root = tmp_path_factory.mktemp("bad-input")
    shards = write_run_shards(root / "shards")
    write_untrained_checkpoint(root / "run" / "best.pt", shards, WindowSpec(window=2205, count=2, overlap=0.25))
    return {"shards": shards, "truncated": truncate_first_shards(shards, root / "truncated"),
            "checkpoint": root / "run" / "best.pt", "root": root}


def run_all(cli_error, cases: dict) -> dict:
    """Run every args tuple of `cases` at once (they mostly wait for imports); {args: error line}."""
    with ThreadPoolExecutor(len(cases)) as pool:
        return dict(zip(cases, pool.map(lambda args: cli_error(*args), cases)))


def check_all(cli_error, cases: dict) -> None:
    messages = run_all(cli_error, cases)
    for args, texts in cases.items():
        for text in ([texts] if isinstance(texts, str) else texts):
            assert text in messages[args], (args, messages[args])


# ------------------------------------------------------------------------------ 2: errors in DataLoader workers
def test_worker_data_error_reaches_the_caller_as_itself(data):
    spec = resolve_source(data["truncated"], "training")
    with pytest.raises(TruncatedShardError, match=r"training-000000\.tar key \d+: .*truncated") as caught:
        list(ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False, num_workers=1)))
    assert caught.value.url.endswith("training-000000.tar") and caught.value.key


@pytest.mark.slow
def test_truncated_shard_is_one_line_with_any_worker_count(data, tmp_path, cli_error):
    cases = {}
    for workers in ("1", "2"):
        cases[("train", "--shards", data["truncated"], "--out", tmp_path / f"run{workers}", "--epochs", "1",
               "--workers", workers, *TINY_ARGS)] = ["training-000000.tar key ", "truncated"]
        cases[("evaluate", "--checkpoint", data["checkpoint"], "--shards", data["truncated"], "--out",
               tmp_path / f"eval{workers}", "--workers", workers)] = ["test-000000.tar key ", "truncated"]
    check_all(cli_error, cases)


# ------------------------------------------------------------------------------ 3, 4: where the results go
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


@contextmanager
def unwritable(path: Path):
    """A folder nobody can create files in: mode 0o555, or for root (whom modes do not stop) the
    filesystem's immutable flag.  Skips where neither works."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    try:
        _set_immutable(path, True)
    except OSError as exc:
        pytest.skip(f"cannot make a folder unwritable as root here ({exc})")
    try:
        probe = path / "probe"
        with pytest.raises(OSError):
            probe.write_text("x")
        yield path
    finally:
        _set_immutable(path, False)


@pytest.mark.slow
def test_unwritable_run_folder_is_one_line_before_the_work(data, tmp_path, cli_error):
    shards = str(data["shards"])
    resumable = tmp_path / "resumable"
    train(TrainConfig(shards=shards, out=str(resumable), verbose=False, **{**TINY, "epochs": 1}))
    before = sorted(p.name for p in resumable.iterdir())
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with unwritable(tmp_path / "ro") as ro, unwritable(resumable):
        cases = {
            ("train", "--shards", shards, "--out", ro, *TINY_ARGS): [str(ro), "cannot write"],
            ("train", "--shards", shards, "--out", ro / "new", *TINY_ARGS): [str(ro), "cannot write"],
            ("train", "--shards", shards, "--out", resumable, "--resume", "--epochs", "2", *TINY_ARGS):
                [str(resumable), "cannot write"],
            ("evaluate", "--checkpoint", data["checkpoint"], "--shards", shards, "--out", ro):
                [str(ro), "cannot write"],
            ("train", "--shards", shards, "--out", not_a_folder / "run", *TINY_ARGS):
                [str(not_a_folder), "not a folder"],
        }
        check_all(cli_error, cases)
    assert sorted(p.name for p in resumable.iterdir()) == before


@pytest.mark.slow
def test_a_file_where_the_run_folder_goes_is_one_line(data, tmp_path, cli_error):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    shards = str(data["shards"])
    check_all(cli_error, {
        ("train", "--shards", shards, "--out", taken, *TINY_ARGS): [str(taken), "is a file, not a folder"],
        ("evaluate", "--checkpoint", data["checkpoint"], "--shards", shards, "--out", taken):
            [str(taken), "is a file, not a folder"],
    })
    assert taken.read_text() == "not a folder"


# ------------------------------------------------------------------------------ 5: sizes that cannot fit
def test_batch_buffers_are_sized_by_the_split_not_the_batch_size(data):
    spec = resolve_source(data["shards"], "training")  # 5 tracks
    row_bytes = -(-spec.sample_bytes // 64) * 64
    for workers in (0, 1):
        batches = list(ShardLoader(spec, LoaderConfig(batch_size=100_000, shuffle_buffer=1_000_000,
                                                      num_workers=workers)))
        assert [len(b) for b in batches] == [5]
        assert batches[0].audio.untyped_storage().nbytes() <= 5 * row_bytes, workers


def test_more_workers_than_tracks_leaves_the_extra_workers_idle(tmp_path):
    truth = write_synthetic_shards(tmp_path, [1])
    batches = list(ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, num_workers=2)))
    assert [b.track_ids.tolist() for b in batches] == [list(truth)]


def test_a_configuration_that_cannot_fit_in_memory_is_one_line(data, tmp_path, cli_error):
    """A manifest promising 2**36-sample clips (128 GiB each): the estimate refuses it before reading."""
    huge = tmp_path / "huge"
    shutil.copytree(data["shards"], huge)
    manifest = json.loads((huge / "manifest.json").read_text())
    manifest.update(clip_samples=2 ** 36, sample_bytes=2 ** 37, record_bytes=2 ** 37 + 2560)
    (huge / "manifest.json").write_text(json.dumps(manifest))
    message = cli_error("train", "--shards", huge, "--out", tmp_path / "run", *TINY_ARGS)
    assert "memory" in message and "GB" in message, message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ 9: runs that cannot learn anything
def test_a_run_that_cannot_take_a_step_is_one_line_and_writes_nothing(data, tmp_path, cli_error):
    run = tmp_path / "run"
    message = cli_error("train", "--shards", data["shards"], "--out", run, "--model", "soundnet-large",
                        "--window-seconds", "0.1", "--windows", "1", "--batch-size", "8")
    assert "5 tracks" in message and "--batch-size 8" in message and "no training step" in message, message
    assert not run.exists()


def test_a_validation_split_without_tracks_reports_no_accuracy(tmp_path, capsys):
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 2], "validation": [0]})
    result = train(TrainConfig(shards=str(shards), out=str(tmp_path / "run"), **{**TINY, "epochs": 1}))
    lines = capsys.readouterr().out.splitlines()
    assert "track vote n/a mean n/a" in lines[0] and "val loss n/a" in lines[0], lines[0]
    assert result.best_val_track_acc is None and result.last["val_track_acc_vote"] is None
    assert "best val" not in lines[-1] and "no validation tracks" in lines[-1], lines[-1]
    assert not (tmp_path / "run" / "best.pt").exists()


# ------------------------------------------------------------------------------ 14: checkpoints
@pytest.mark.slow
def test_damaged_or_misplaced_checkpoints_are_one_line(data, tmp_path, cli_error):
    shards = str(data["shards"])
    resumable = tmp_path / "resumable"
    train(TrainConfig(shards=shards, out=str(resumable), verbose=False, **{**TINY, "epochs": 1}))
    damaged_checkpoint(resumable / "last.pt", resumable / "last.pt")
    bad = damaged_checkpoint(data["checkpoint"], tmp_path / "bad" / "best.pt")
    messages = run_all(cli_error, {
        ("train", "--shards", shards, "--out", resumable, "--resume", "--epochs", "2", *TINY_ARGS): 0,
        ("evaluate", "--checkpoint", bad, "--shards", shards): 1,
        ("evaluate", "--checkpoint", data["checkpoint"].parent, "--shards", shards): 2,
    })
    resume, evaluate, folder = messages.values()
    for message, path in ((resume, resumable / "last.pt"), (evaluate, bad)):
        assert f"{path}: unreadable checkpoint" in message and "weights_only" not in message, message
    assert f"{data['checkpoint'].parent} is a folder" in folder and "best.pt" in folder and "last.pt" in folder


# ------------------------------------------------------------------------------ 16: wording
def test_skip_warnings_count_epochs_from_one_and_evaluate_has_none(data, tmp_path, caplog):
    from fmashard.train import EvaluateConfig, evaluate_checkpoint

    caplog.set_level(logging.WARNING, logger="fmashard")
    train(TrainConfig(shards=str(data["truncated"]), out=str(tmp_path / "run"), on_error="skip", verbose=False,
                      **{**TINY, "epochs": 1}))
    counts = [r.getMessage() for r in caplog.records if "samples skipped" in r.getMessage()]
    assert counts and all("epoch 0" not in m for m in counts), counts
    assert any(m.startswith("epoch 1: ") for m in counts) and any(m.startswith("validation") for m in counts)
    caplog.clear()
    evaluate_checkpoint(EvaluateConfig(checkpoint=str(data["checkpoint"]), shards=str(data["truncated"]),
                                       out=str(tmp_path / "eval"), on_error="skip"))
    counts = [r.getMessage() for r in caplog.records if "samples skipped" in r.getMessage()]
    assert counts and all("epoch" not in m for m in counts) and counts[0].startswith("test split: "), counts


def test_a_config_json_that_is_not_an_object_is_one_line(data, tmp_path, cli_error):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")
    message = cli_error("train", "--shards", data["shards"], "--out", run, *TINY_ARGS)
    assert f"{run / 'config.json'}: not a run config" in message, message


@pytest.mark.parametrize("args, expected", [
    (("train", "--shards", "x", "--out", "y", "--batch-size", "abc"), "error: Invalid value for '--batch-size'"),
    (("train", "--out", "y"), "error: Missing option '--shards'"),
    (("evaluate", "--checkpoint", "c", "--shards", "s", "--bogus"), "error: No such option: --bogus"),
    (("nosuch",), "error: No such command 'nosuch'"),
])
def test_usage_errors_end_with_one_error_line_naming_the_option(args, expected):
    result = run_fmashard(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith(expected), result.stderr


def test_help_and_no_arguments_show_the_help_and_exit_0():
    bare, helped = run_fmashard(), run_fmashard("train", "--help")
    assert bare.returncode == 0 and "train" in bare.stdout and "Usage" in bare.stdout, (bare.returncode, bare.stderr)
    assert helped.returncode == 0 and "--shards" in helped.stdout
