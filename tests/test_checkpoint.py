"""Checkpoints: atomic writes, safe loading, RNG round trips, and exact resume of a killed run."""
from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from fmashard.data.transforms import DeviceTransforms, NormalizeTracks, RandomCrop
from fmashard.data.windows import WindowSpec
from fmashard.errors import StorageError, UserError
from fmashard.train import TrainConfig, train
from fmashard.train.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    window_of,
    window_record,
)
from fmashard.train.run_dir import read_jsonl, truncate_jsonl
from synth_shards import write_synthetic_shards


def write_untrained_checkpoint(path, shards, window) -> list[str]:
    """An untrained soundnet-large checkpoint for the vocabulary of `shards`; returns the vocabulary."""
    from dataclasses import asdict

    from fmashard.models import build_model
    from fmashard.train.checkpoint import save_checkpoint

    vocabulary = json.loads((Path(shards) / "manifest.json").read_text())["vocabulary"]
    torch.manual_seed(0)
    model = build_model("soundnet-large", len(vocabulary), window.window)
    save_checkpoint(path, {"model_name": "soundnet-large", "model": model.state_dict(), "vocabulary": vocabulary,
                           "window": asdict(window), "config": {"amp": False}, "epoch": 1, "step": 3})
    return vocabulary


def write_run_shards(root, counts=None, clip_samples=4000) -> Path:
    """Synthetic shards (random int16 noise, 5-genre vocabulary) with training/validation/test splits and
    one manifest.json: many 1-3 sample shards, so ranks and resumes start mid-shard."""
    counts = counts or {"training": [2, 1, 2], "validation": [2, 1], "test": [1, 2]}
    root = Path(root)
    splits, manifest, first_id = {}, None, 2
    for i, (split, sizes) in enumerate(counts.items()):
        write_synthetic_shards(root, sizes, clip_samples=clip_samples, split=split, seed=i, first_id=first_id)
        manifest = json.loads((root / "manifest.json").read_text())
        splits.update(manifest["splits"])
        first_id += 3 * sum(sizes)
    manifest["splits"] = splits
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


# A model step of soundnet-large on 0.1 s windows costs well under a second on a CPU.
TINY = dict(model="soundnet-large", window_seconds=0.1, windows=2, batch_size=2, epochs=2, seed=3)


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.arange(3.0)})
    save_checkpoint(path, {"step": 2, "weights": torch.arange(4.0)})
    state = load_checkpoint(path)
    assert state["step"] == 2 and torch.equal(state["weights"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(StorageError, match="disk full") as err:   # one line naming the file
        save_checkpoint(path, {"step": 2})
    assert str(path) in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_rejects_missing_foreign_and_pickled_files(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="not an fmashard checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"format": "fmashard-checkpoint", "version": 1, "code": object()}, tmp_path / "pickle.pt")
    with pytest.raises(UserError, match="unreadable checkpoint"):  # weights_only refuses arbitrary objects
        load_checkpoint(tmp_path / "pickle.pt")


def damaged_checkpoint(good: Path, bad: Path) -> Path:
    """A copy of `good` whose pickle (data.pkl, the first zip member) is overwritten with garbage."""
    import zipfile

    raw = bytearray(good.read_bytes())
    member = zipfile.ZipFile(good).infolist()[0]
    assert member.filename.endswith("data.pkl")
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    raw[start + 5:start + 25] = b"\xff" * 20
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(bytes(raw))
    return bad


def test_a_damaged_checkpoint_is_unreadable_and_a_folder_is_named(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"step": 1, "weights": torch.zeros(100)})
    for bad in (damaged_checkpoint(good, tmp_path / "pickle.pt"), tmp_path / "cut.pt", tmp_path / "zeros.pt"):
        if bad.name == "cut.pt":
            bad.write_bytes(good.read_bytes()[:300])
        elif bad.name == "zeros.pt":
            bad.write_bytes(bytes(good.stat().st_size))
        with pytest.raises(UserError) as caught:
            load_checkpoint(bad)
        message = str(caught.value)
        assert message.startswith(f"{bad}: unreadable checkpoint (") and "\n" not in message, message
        assert "weights_only" not in message and len(message) < 300, message
    with pytest.raises(UserError, match=f"{tmp_path} is a folder, not a checkpoint.*best.pt.*last.pt"):
        load_checkpoint(tmp_path)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_window_record_keeps_its_keys_and_reads_back():
    """The "window" entry keeps the keys it had when augmentations were WindowSpec flags."""
    window = WindowSpec(window=2205, overlap=0.25, count=2)
    record = window_record(window, DeviceTransforms(crop=RandomCrop()))
    assert record == {"window": 2205, "overlap": 0.25, "count": 2, "random_crop": True, "normalize": False}
    assert window_record(window)["random_crop"] is False
    assert window_record(window, DeviceTransforms(window_transforms=[NormalizeTracks()]))["normalize"] is True
    assert window_of(record) == window and window_of({"window": 2205, "overlap": 0.25, "count": 2}) == window
    with pytest.raises(TypeError):
        window_of({"window": 2205, "bogus": 1})


def test_truncate_jsonl_drops_steps_after_the_checkpoint_and_a_cut_line(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "tr')
    truncate_jsonl(path, 3)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


class Killed(BaseException):
    """What a SIGKILL looks like from inside: the run stops between two steps, nothing is cleaned up."""


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    # 4 training tracks, batch 2: 2 steps per epoch, 2 epochs; random crops exercise the feeder's start_index
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 1, 1], "validation": [2, 1]})
    base = dict(shards=str(shards), random_crop=True, augment="gain=6,polarity,mixup=0.4", log_batches=True,
                verbose=False, **TINY)   # every draw (crops, gain, sign, mixup) must repeat after the resume
    straight = train(TrainConfig(out=str(tmp_path / "a"), checkpoint_every=0, **base))
    assert (straight.steps, straight.epochs) == (4, 2)

    def kill_at_4(step, epoch):  # last.pt is then the one of step 3: epoch 2, one batch done
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train(TrainConfig(out=str(tmp_path / "b"), checkpoint_every=1, **base), on_step=kill_at_4)
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (state["epoch"], state["step"], state["batches_done"]) == (1, 3, 1)
    assert state["schedule"]["name"] == "cosine" and state["lr"] < 1e-3   # the default schedule, past its peak
    assert len(read_jsonl(tmp_path / "b" / "steps.jsonl")) == 4  # step 4 was logged, then the kill
    resumed = train(TrainConfig(out=str(tmp_path / "b"), checkpoint_every=1, resume=True, **base))
    assert (resumed.steps, resumed.epochs, resumed.interrupted) == (4, 2, False)

    order_a = [r["track_ids"] for r in read_jsonl(tmp_path / "a" / "steps.jsonl")]
    order_b = [r["track_ids"] for r in read_jsonl(tmp_path / "b" / "steps.jsonl")]
    assert order_b == order_a and len(order_a) == 4
    assert sorted(sum(order_a[:2], [])) == sorted(sum(order_a[2:], []))  # each epoch sees every track once
    # (that epochs are reshuffled is test_loader's: with 4 tracks two epochs may well agree by chance)
    last_a, last_b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert last_b["lr"] == last_a["lr"] and last_b["schedule"] == last_a["schedule"]   # the same rate curve
    a, b = last_a["model"], last_b["model"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    # the epoch records match too (the train totals of the interrupted epoch were carried in last.pt)
    metrics_a, metrics_b = read_jsonl(tmp_path / "a" / "metrics.jsonl"), read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [m["step"] for m in metrics_b] == [m["step"] for m in metrics_a] == [2, 4]
    for ma, mb in zip(metrics_a, metrics_b):
        for key in ("train_loss", "train_window_acc", "val_loss", "val_track_acc_vote", "val_track_acc_mean"):
            assert mb[key] == pytest.approx(ma[key], rel=1e-4, abs=1e-6), key


def test_sigterm_saves_and_max_steps_stops_mid_epoch(tmp_path):
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 1, 1], "validation": [2, 1]})
    base = dict(shards=str(shards), out=str(tmp_path / "run"), checkpoint_every=0, verbose=False, **TINY)

    def term_at_1(step, epoch):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = train(TrainConfig(**base), on_step=term_at_1)
    assert stopped.interrupted and stopped.steps == 1 and not stopped.history
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 1, 1)

    partial = train(TrainConfig(resume=True, max_steps=3, **base))
    assert (partial.steps, partial.epochs) == (3, 1)
    assert [m["complete"] for m in partial.history] == [True, False]
    assert partial.last["steps_per_rank"] == [1]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["step"], state["batches_done"]) == (1, 3, 1)

    rest = train(TrainConfig(resume=True, **base))
    assert (rest.steps, rest.epochs) == (4, 2)
    assert [(m["epoch"], m["complete"]) for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == \
        [(1, True), (2, False), (2, True)]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_augmentations_change_what_is_learned(tmp_path):
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 1, 1], "validation": [2, 1]})
    base = dict(shards=str(shards), verbose=False, random_crop=False, **{**TINY, "epochs": 1})
    plain = train(TrainConfig(out=str(tmp_path / "a"), augment="none", **base))
    mixed = train(TrainConfig(out=str(tmp_path / "b"), augment="gain=6,polarity,mixup=0.4", **base))
    a, b = (load_checkpoint(r.run_dir / "last.pt")["model"] for r in (plain, mixed))
    assert any(not torch.equal(a[name], b[name]) for name in a if a[name].is_floating_point())


def test_melcnn_trains_and_evaluates_on_log_mel_features(tmp_path):
    from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint

    shards = write_run_shards(tmp_path / "shards", clip_samples=16_000)
    result = train(TrainConfig(shards=str(shards), out=str(tmp_path / "run"), model="melcnn", window_seconds=0.4,
                               windows=2, batch_size=2, epochs=1, augment="gain=3", verbose=False))
    assert result.steps == 3 and result.last["val_tracks"] == 3   # 5 training tracks, batch 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["features"] == "logmel"
    report = evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path / "run" / "last.pt"), shards=str(shards)))
    assert report.metrics.tracks == 3 and report.metrics.windows == 6


def test_features_must_fit_the_model(tmp_path):
    with pytest.raises(ValueError, match="model melcnn takes logmel input, not wave"):
        TrainConfig(shards="s", out=str(tmp_path), model="melcnn", features="wave")
    with pytest.raises(UserError, match="augment: unknown augmentation .reverb."):
        TrainConfig(shards="s", out=str(tmp_path), augment="reverb")
