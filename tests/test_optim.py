"""The optimizer and schedule registry (fmashard.train.optim), the default recipe, and the best.pt rule."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from fmashard.errors import UserError
from fmashard.models import build_model
from fmashard.train import ConfigError, TrainConfig, train
from fmashard.train.checkpoint import BEST_RULE, load_checkpoint, select_best
from fmashard.train.config import DEFAULT_AUGMENT, NOTEBOOK_FLAGS, NOTEBOOK_RECIPE
from fmashard.train.optim import OPTIMIZERS, SCHEDULES, Schedule, build_optimizer, parameter_groups, warmup_steps
from test_checkpoint import TINY, write_run_shards


def test_cosine_warms_up_linearly_peaks_and_decays_to_zero():
    s = Schedule("cosine", lr=0.1, total_steps=100, warmup=0.05)
    assert s.warmup == 5
    assert [s.lr_at(i) for i in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])   # warm-up, peak
    assert s.lr_at(5) == pytest.approx(0.1)                                                  # cosine starts at it
    assert s.lr_at(5 + 95 // 2) == pytest.approx(0.05, abs=2e-3)                            # half way down
    assert 0 < s.lr_at(99) < 1e-4 and s.lr_at(500) == s.lr_at(99)                           # the end, and past it
    decay = [s.lr_at(i) for i in range(5, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_onecycle_is_torch_s_one_cycle_lr_step_for_step():
    total, warmup, lr = 40, 12, 0.01
    ours = Schedule("onecycle", lr=lr, total_steps=total, warmup=warmup)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    theirs = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=warmup / total,
                                                 anneal_strategy="cos", cycle_momentum=False)
    for step in range(total):
        assert ours.lr_at(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9), step
        optimizer.step()
        theirs.step()
    assert ours.lr_at(0) == pytest.approx(lr / 25) and ours.lr_at(warmup - 1) == pytest.approx(lr)


def test_none_is_constant_and_warmup_takes_a_fraction_or_steps():
    assert {Schedule("none", 3e-4, 10).lr_at(i) for i in range(12)} == {3e-4}
    assert (warmup_steps(0.05, 1000), warmup_steps(0.05, 3), warmup_steps(7, 1000), warmup_steps(0, 1000)) == \
        (50, 1, 7, 0)
    assert Schedule("cosine", 1.0, 10, warmup=0).lr_at(0) == 1.0          # no warm-up: starts at the peak
    assert set(SCHEDULES) == {"cosine", "onecycle", "none"} and set(OPTIMIZERS) == {"adamw", "adam"}


def test_apply_sets_every_group_and_the_state_names_the_curve():
    model = build_model("soundnet-large", 3, 1_000)
    optimizer = build_optimizer("adamw", model, lr=1e-3)
    s = Schedule("cosine", 1e-3, 20, warmup=4)
    assert s.apply(optimizer, 2) == pytest.approx(7.5e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(7.5e-4)] * 2
    assert s.state() == {"name": "cosine", "lr": 1e-3, "total_steps": 20, "warmup_steps": 4}
    assert Schedule("none", 1e-3, 20).state() == Schedule("none", 1e-3, 99).state()   # --epochs may grow


def test_weight_decay_spares_batchnorm_and_biases():
    torch.manual_seed(0)
    model = build_model("resnet1d", 4, 15_000)
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             for p in m.parameters()}
    biases = {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    decayed, spared = parameter_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and spared["weight_decay"] == 0.0
    assert norms and norms | biases <= {id(p) for p in spared["params"]}
    assert not (norms | biases) & {id(p) for p in decayed["params"]}
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))
    # one real AdamW step with zero gradients: only decay moves anything, and only the decayed weights
    optimizer = build_optimizer("adamw", model, lr=0.1, weight_decay=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if id(p) in norms | biases:
            assert torch.equal(p, before[name]), name
        elif p.ndim > 1:
            torch.testing.assert_close(p, before[name] * (1 - 0.1 * 0.5), msg=name)


def test_adam_is_the_notebook_s_plain_adam_unless_decay_is_given():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    assert {g["weight_decay"] for g in build_optimizer("adam", model, 1e-3).param_groups} == {0.0}
    assert isinstance(build_optimizer("adam", model, 1e-3), torch.optim.Adam)
    assert [g["weight_decay"] for g in build_optimizer("adamw", model, 1e-3).param_groups] == [0.05, 0.0]
    assert [g["weight_decay"] for g in build_optimizer("adam", model, 1e-3, 0.01).param_groups] == [0.01, 0.0]


def test_defaults_are_the_recipe_and_the_notebook_is_one_set_of_flags_away():
    config = TrainConfig(shards="x", out="y")
    assert (config.optimizer, config.lr_schedule, config.augment, config.random_crop, config.precise_bn) == \
        ("adamw", "cosine", DEFAULT_AUGMENT, True, 8)
    roles = config.transforms()
    assert type(roles.crop).__name__ == "RandomCrop" and roles.batch_transforms == ()
    assert [type(t).__name__ for t in roles.window_transforms] == ["RandomGain", "RandomPolarity"]
    notebook = TrainConfig(shards="x", out="y", **NOTEBOOK_RECIPE)
    assert not notebook.transforms() and notebook.precise_bn == 0 and notebook.optimizer == "adam"
    from fmashard.cli.options import option_parameters

    shown = {p.name: p.default.default for p in option_parameters(TrainConfig)}
    assert shown["augment"] == DEFAULT_AUGMENT and shown["optimizer"] == "adamw"
    for field, value in (("optimizer", "sgd"), ("lr_schedule", "step"), ("warmup", 1.5), ("warmup", -1),
                         ("weight_decay", 1.0)):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(shards="x", out="y", **{field: value})


def record(epoch, acc, loss):
    return {"epoch": epoch, "step": 10 * epoch, "val_track_acc_mean": acc, "val_track_acc_vote": acc,
            "val_loss": loss}


def test_best_is_the_highest_three_epoch_mean_ties_to_the_lower_loss():
    assert "mean logits" in BEST_RULE and "2 epochs before" in BEST_RULE
    best, recent, chosen = None, [], []
    # means 0.5, 0.7, 0.7 (a tie at a higher loss: kept 2), 0.8, 0.8 (a tie at a lower loss: 5), 0.77, 0.77
    for epoch, acc, loss in [(1, 0.5, 1.0), (2, 0.9, 0.9), (3, 0.7, 1.2), (4, 0.8, 0.7), (5, 0.9, 0.6),
                             (6, 0.6, 0.5), (7, 0.8, 0.4)]:
        best, recent, improved = select_best(best, recent, record(epoch, acc, loss), complete=True)
        if improved:
            chosen.append(epoch)
    assert chosen == [1, 2, 4, 5] and best["epoch"] == 5 and best["score"] == pytest.approx(0.8)
    assert recent == [0.9, 0.6, 0.8]
    # an incomplete epoch (max_steps) is scored, but not kept for the next epochs' means
    _, kept, _ = select_best(best, recent, record(8, 0.1, 0.1), complete=False)
    assert kept == recent
    assert select_best(None, [], {"epoch": 1, "step": 1, "val_track_acc_mean": None, "val_loss": None,
                                  "val_track_acc_vote": None}, True)[2] is False   # no validation tracks


def test_a_run_sets_each_step_s_rate_from_the_schedule_and_refuses_another_length_on_resume(tmp_path):
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 1, 1], "validation": [2, 1]})
    base = dict(shards=str(shards), out=str(tmp_path / "run"), verbose=False, checkpoint_every=0,
                **{**TINY, "epochs": 2}, warmup=1)
    result = train(TrainConfig(**base, max_steps=3))          # 2 steps per epoch: the schedule spans 4
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["schedule"] == {"name": "cosine", "lr": 1e-3, "total_steps": 4, "warmup_steps": 1}
    assert state["step"] == result.steps == 3
    assert state["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 1 / 3)))   # step index 2 of 4
    assert state["best"]["metric"].startswith("val_track_acc_mean")
    with pytest.raises(UserError, match="--resume: .*schedule.*same --epochs"):
        train(TrainConfig(**{**base, "epochs": 3}, resume=True))


@pytest.mark.parametrize("flags", [[], NOTEBOOK_FLAGS.split()])
def test_the_cli_s_defaults_and_notebook_flags_are_the_config_s_recipes(flags, monkeypatch):
    """`fmashard train` with no recipe flags trains TrainConfig's defaults; the flags its --help names for the
    notebook's recipe give exactly NOTEBOOK_RECIPE (the run itself is replaced by a recorder)."""
    from typer.testing import CliRunner

    import fmashard.train
    from fmashard.cli import _register, app
    from fmashard.cli.train import train as cli_train

    seen = []
    monkeypatch.setattr(fmashard.train, "train", lambda config: seen.append(config) or SimpleNamespace(
        interrupted=False))
    _register()
    result = CliRunner().invoke(app, ["train", "--shards", "s", "--out", "o", *flags])
    assert result.exit_code == 0, result.output
    expected = TrainConfig(shards="s", out="o", **(NOTEBOOK_RECIPE if flags else {}))
    assert seen == [expected]
    if flags:   # the --help text names these flags
        assert " ".join(flags) in " ".join(cli_train.__doc__.split())
