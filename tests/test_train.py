"""Training: the step function per model, a demo-corpus run that learns, the CLI and its bad inputs."""
from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import run_fmashard
from fmashard.errors import EmptySplitError, UserError
from fmashard.models import build_model
from fmashard.train import ConfigError, TrainConfig, train
from fmashard.train.checkpoint import load_checkpoint, save_checkpoint
from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint
from fmashard.train.loop import train_step
from fmashard.train.precision import autocast_context
from fmashard.train.run_dir import read_jsonl
from test_checkpoint import TINY, write_run_shards

# The shortest window each model accepts (its convolutions and pools consume this much).
MIN_WINDOW = {"resnet1d": 14_757, "soundnet": 56_798, "soundnet-large": 908}


@pytest.mark.parametrize("name", ["soundnet-large", "soundnet", "resnet1d"])
def test_each_model_learns_a_fixed_batch_with_bf16_autocast(name):
    """One optimizer step per batch of windows, under the bf16 autocast ctx, makes the loss fall.
    (On a CPU without AVX512-BF16 bf16 convolutions take a slow path: two windows keep this short.)"""
    torch.manual_seed(0)
    window = max(MIN_WINDOW[name], 2_000)
    model = build_model(name, 4, window)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctx, dtype = autocast_context(torch.device("cpu"), amp=True, amp_dtype="auto")
    assert dtype == torch.bfloat16
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    windows = torch.randn(2, 1, window) * 0.1
    labels = torch.tensor([1, 3])
    losses = []
    for _ in range(3):
        loss, logits = train_step(model, optimizer, scaler, ctx, windows, labels)
        assert logits.shape == (2, 4) and logits.dtype == torch.bfloat16 and not loss.requires_grad
        losses.append(loss.item())
    assert min(losses[1:]) < losses[0], losses


def test_fp16_shares_the_code_path_with_an_enabled_scaler():
    ctx, dtype = autocast_context(torch.device("cpu"), amp=True, amp_dtype="fp16")
    assert dtype == torch.float16
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    model = build_model("soundnet-large", 3, 1_000)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, logits = train_step(model, optimizer, scaler, ctx, torch.randn(2, 1, 1_000) * 0.1, torch.tensor([0, 2]))
    assert logits.dtype == torch.float16 and torch.isfinite(loss)
    assert scaler.get_scale() > 0


@pytest.mark.parametrize("field, value, message", [
    ("model", "vgg", "unknown model 'vgg'"), ("batch_size", 0, "batch_size"), ("amp_dtype", "int8", "amp_dtype"),
    ("overlap", 1.0, "overlap"), ("max_steps", 0, "max_steps"), ("lr", 0.0, "lr"), ("on_error", "warn", "on_error"),
])
def test_config_is_validated_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(shards="x", out="y", **{field: value})
    with pytest.raises(ValueError):  # also a ValueError for library callers
        TrainConfig(shards="x", out="y", **{field: value})


# ------------------------------------------------------------------------------------------- demo corpus
@pytest.fixture(scope="session")
def demo_fma(request) -> Path:
    """The 4-genre x 10-track demo corpus (real MP3s).  Writing it takes minutes on a loaded machine, so it
    is kept in pytest's cache, keyed by the generator's source; without the cache, conftest's demo_corpus."""
    import shard_tools.demo_corpus as demo

    cache = getattr(request.config, "cache", None)
    if cache is None:
        return request.getfixturevalue("demo_corpus")
    digest = hashlib.sha256(Path(demo.__file__).read_bytes()).hexdigest()[:12]
    folder = Path(cache.mkdir(f"fmashard-demo-4x10-{digest}"))
    if not (folder / "fma_metadata" / "tracks.csv").is_file():  # written last: a finished corpus
        shutil.rmtree(folder, ignore_errors=True)
        demo.make_demo_corpus(folder, genres=4, tracks_per_genre=10, seed=0)
    return folder


@pytest.fixture(scope="module")
def demo_shards_short(demo_fma, tmp_path_factory) -> Path:
    """Demo shards of 6-s clips (the ~8 s track 098565 is kept): 31 training, 4 validation, 4 test tracks."""
    from shard_tools.build import BuildConfig, build_shards

    out = tmp_path_factory.mktemp("demo-shards-short")
    build_shards(BuildConfig(fma_dir=str(demo_fma), out=str(out), subset="small", workers=2, shard_size="1MB",
                             clip_seconds=6.0, min_seconds=5.0))
    return out


# resnet1d on 0.7-s windows, one per track: ~10 s per epoch on a loaded 2-core CPU.  BatchNorm running
# statistics trail the fast-changing weights of so short a run (eval-mode predictions collapse to one
# class); --precise-bn re-estimates them before each validation.
DEMO = dict(model="resnet1d", window_seconds=0.7, windows=1, batch_size=4, lr=1e-3, epochs=2, seed=0, precise_bn=8)


@pytest.fixture(scope="module")
def demo_run(demo_shards_short, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-run") / "run"
    return train(TrainConfig(shards=str(demo_shards_short), out=str(out), verbose=False, **DEMO))


@pytest.mark.slow
def test_demo_run_learns_the_genres(demo_run):
    assert demo_run.epochs == 2 and demo_run.steps == 14   # 31 tracks, batch 4, incomplete batch dropped
    last = demo_run.last
    assert last["val_tracks"] == 4
    assert last["val_track_acc_vote"] >= 0.5, demo_run.history  # chance is 0.25
    assert demo_run.best_val_track_acc >= 0.5
    assert last["train_loss"] < demo_run.history[0]["train_loss"]
    run_dir = demo_run.run_dir
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records == demo_run.history
    for key in ("epoch", "step", "train_loss", "train_window_acc", "val_loss", "val_window_acc", "val_track_acc_vote",
                "val_track_acc_mean", "tracks_per_s", "windows_per_s", "seconds", "skipped", "steps_per_rank"):
        assert key in records[-1], key
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["model"] == "resnet1d" and config["vocabulary"] == ["Electronic", "Experimental", "Folk",
                                                                              "Hip-Hop"]
    state = load_checkpoint(run_dir / "best.pt")
    assert state["model_name"] == "resnet1d" and state["window"]["window"] == 15_435
    assert state["best"]["val_track_acc_vote"] == demo_run.best_val_track_acc


@pytest.mark.slow
def test_melcnn_learns_the_demo_genres_from_log_mel_features(demo_shards_short, tmp_path):
    """The spectrogram model on the demo corpus with the default recipe: above chance (0.25, four genres) on
    the validation and on the held-out test split (4 tracks each; ~20 s on a 2-core CPU)."""
    from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint

    run = train(TrainConfig(shards=str(demo_shards_short), out=str(tmp_path / "run"), model="melcnn",
                            window_seconds=1.0, windows=2, batch_size=4, epochs=2, seed=0, verbose=False))
    assert run.last["val_tracks"] == 4 and run.best_val_track_acc >= 0.5, run.history
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    test = evaluate_checkpoint(EvaluateConfig(checkpoint=str(run.run_dir / "best.pt"), shards=str(demo_shards_short),
                                              split="test")).metrics
    assert test.tracks == 4 and test.track_acc_mean >= 0.5, test


@pytest.mark.slow
def test_evaluate_cli_writes_metrics_and_a_confusion_matrix(demo_run, demo_shards_short, tmp_path):
    result = run_fmashard("evaluate", "--checkpoint", demo_run.run_dir / "best.pt", "--shards", demo_shards_short,
                          "--split", "test", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test: 4 tracks, 4 windows | loss ")
    metrics = json.loads((tmp_path / "eval_test.json").read_text())
    assert metrics["tracks"] == 4 and metrics["model"] == "resnet1d"
    confusion = json.loads((tmp_path / "confusion_test.json").read_text())
    assert confusion["vocabulary"] == ["Electronic", "Experimental", "Folk", "Hip-Hop"]
    assert sum(map(sum, confusion["matrix"])) == 4
    diagonal = sum(confusion["matrix"][i][i] for i in range(4))
    assert diagonal / 4 == pytest.approx(metrics["track_acc_vote"])
    assert (tmp_path / "confusion_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory) -> Path:
    return write_run_shards(tmp_path_factory.mktemp("tiny") / "shards")


@pytest.fixture(scope="module")
def no_validation(tmp_path_factory) -> Path:
    """A build whose validation split holds no track (too few groups for its share)."""
    return write_run_shards(tmp_path_factory.mktemp("noval") / "shards",
                            {"training": [2, 1, 2], "validation": [], "test": [1, 2]})


TINY_ARGS = ["--model", "soundnet-large", "--window-seconds", "0.1", "--windows", "2", "--batch-size", "2"]


@pytest.mark.slow
def test_train_cli_runs_and_refuses_to_overwrite_the_run(tiny_shards, tmp_path, cli_error):
    run = tmp_path / "run"
    result = run_fmashard("train", "--shards", tiny_shards, "--out", run, "--epochs", "1", *TINY_ARGS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # not a terminal: no bar, one line per epoch and a summary
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("epoch 1/1 step 3 | train loss") and lines[-1].startswith("done: 1 epochs, 3 steps")
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["model"] == "soundnet-large" and config["amp_dtype"] is None
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "last.pt", "best.pt"}
    # the same command again would overwrite the run: refused, --resume continues it
    message = cli_error("train", "--shards", tiny_shards, "--out", run, "--epochs", "1", *TINY_ARGS)
    assert "already holds this run" in message and "--resume" in message


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(tiny_shards, no_validation, tmp_path, cli_error):
    """Each case runs the real CLI in its own interpreter (all at once: they mostly wait for imports)."""
    expected = {}  # args -> the text the one-line error must hold

    def train_cli(*args, out=tmp_path / "run"):
        return ("train", "--out", out, *args)

    expected[train_cli("--shards", tiny_shards, "--model", "vgg")] = "unknown model 'vgg'"
    expected[train_cli("--shards", tiny_shards, "--device", "cuda", *TINY_ARGS)] = "CUDA is not available"

    bare = tmp_path / "bare"  # shards without a manifest
    shutil.copytree(tiny_shards, bare)
    (bare / "manifest.json").unlink()
    expected[train_cli("--shards", bare, *TINY_ARGS)] = "need shards with a manifest.json"
    novocab = tmp_path / "novocab"  # a manifest without a vocabulary
    shutil.copytree(tiny_shards, novocab)
    manifest = json.loads((novocab / "manifest.json").read_text())
    del manifest["vocabulary"]
    (novocab / "manifest.json").write_text(json.dumps(manifest))
    expected[train_cli("--shards", novocab, *TINY_ARGS)] = "holding the genre vocabulary"

    other = tmp_path / "other"  # a RUN_DIR holding another run
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"train": {**TrainConfig(shards=str(tiny_shards), out=str(other),
                                                                          **TINY).as_dict(), "lr": 0.01}}))
    expected[train_cli("--shards", tiny_shards, *TINY_ARGS, out=other)] = "holds another run (lr=0.01"

    # --resume with another model / evaluate with a checkpoint of another vocabulary
    vocab = json.loads((tiny_shards / "manifest.json").read_text())["vocabulary"]
    resumable = tmp_path / "resumable"
    save_checkpoint(resumable / "last.pt", {"model_name": "soundnet", "vocabulary": vocab, "config": {}, "step": 7})
    expected[train_cli("--shards", tiny_shards, *TINY_ARGS, "--resume", out=resumable)] = \
        "is a 'soundnet' run, not 'soundnet-large'"
    save_checkpoint(tmp_path / "foreign.pt", {"model_name": "soundnet-large", "vocabulary": ["Rock", "Pop"],
                                              "config": {}, "window": {"window": 2205}, "model": {}})
    expected[("evaluate", "--checkpoint", tmp_path / "foreign.pt", "--shards", tiny_shards)] = \
        "trained on the genres ['Rock', 'Pop']"
    save_checkpoint(tmp_path / "mismatch.pt", {"model_name": "soundnet-large", "vocabulary": vocab, "config": {},
                                               "window": {"window": 2205, "count": 1},
                                               "model": {"fc.weight": torch.zeros(1)}})  # not its weights
    expected[("evaluate", "--checkpoint", tmp_path / "mismatch.pt", "--shards", tiny_shards)] = \
        "weights do not fit model 'soundnet-large'"
    expected[("evaluate", "--checkpoint", tmp_path / "mismatch.pt", "--shards", no_validation, "--split",
              "validation")] = "split 'validation' has no tracks (the build gave it none: rebuild with a --split-ratios"

    with ThreadPoolExecutor(len(expected)) as pool:
        messages = dict(zip(expected, pool.map(lambda args: cli_error(*args), expected)))
    for args, text in expected.items():
        assert text in messages[args], (args, messages[args])


# ------------------------------------------------------------------------------------------- no validation split
def test_a_build_without_validation_trains_with_a_note_and_keeps_last_pt_only(no_validation, tmp_path, capsys):
    run = tmp_path / "run"
    result = train(TrainConfig(shards=str(no_validation), out=str(run), **{**TINY, "epochs": 1}))
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {no_validation / 'manifest.json'}: split 'validation' has no tracks (the build gave "
                     "it none: rebuild with a --split-ratios share for it and at least as many groups, or tracks, "
                     "as splits with a share): training without validation (last.pt only, no best.pt, validation "
                     "metrics n/a)"]
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "last.pt"}
    assert result.steps == 3 and result.best_epoch is None
    assert result.last["val_tracks"] == 0 and result.last["val_loss"] is None and result.last["train_loss"] > 0
    assert result.summary().endswith("no validation tracks: no accuracy, no best.pt")
    # evaluation is consistent: the test split of last.pt works, the missing split and best.pt are one line each
    report = evaluate_checkpoint(EvaluateConfig(checkpoint=str(run / "last.pt"), shards=str(no_validation)))
    assert report.split == "test" and report.metrics.tracks == 3
    with pytest.raises(EmptySplitError, match="split 'validation' has no tracks .*--split-ratios"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(run / "last.pt"), shards=str(no_validation),
                                           split="validation"))
    with pytest.raises(UserError, match="no such checkpoint .*last.pt is there: a run without validation"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(run / "best.pt"), shards=str(no_validation)))


def test_compile_failure_is_one_line():
    from fmashard.train.display import compile_guard

    with pytest.raises(UserError, match=r"--compile: torch.compile failed on this machine \(RuntimeError: no cc"):
        with compile_guard(True):
            raise RuntimeError("no cc\nlong inductor log")
    with pytest.raises(RuntimeError):  # without --compile, errors are not relabelled
        with compile_guard(False):
            raise RuntimeError("other")


def test_progress_bar_draws_on_a_terminal_and_stays_off_in_logs(capsys, monkeypatch):
    from fmashard.train.display import Progress

    config = TrainConfig(shards="x", out="y", progress=True)
    progress = Progress(config, main=True)
    progress.start_epoch(0, 2, total=3, done=1)
    for _ in range(2):
        progress.advance(torch.tensor(1.5), windows=14, tracks=2)
    progress.end_epoch()
    progress.line("epoch 1/2 ...")
    assert capsys.readouterr().out.splitlines()[-1] == "epoch 1/2 ..."
    monkeypatch.setenv("CI", "true")
    assert Progress(TrainConfig(shards="x", out="y"), main=True).bar is None
    assert Progress(config, main=False).bar is None and not Progress(config, main=False).verbose
