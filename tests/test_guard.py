"""The non-finite guard (fmashard.train.guard): a step whose loss or gradients are not finite changes
nothing and is counted; a run of them stops training in one line; best.pt never comes from a non-finite
epoch; evaluate refuses non-finite weights.  Non-finite values are injected (a NaN batch, a hook that
poisons a gradient), so every test holds on any CPU."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fmashard.train import TrainConfig, train
from fmashard.train import loop as loop_module
from fmashard.train.checkpoint import load_checkpoint, save_checkpoint, select_best
from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint
from fmashard.train.guard import NONFINITE_LIMIT, NonFiniteGuard, NonFiniteStop, non_finite, step_unless
from fmashard.train.loop import train_step
from fmashard.train.optim import build_optimizer
from fmashard.train.run_dir import read_jsonl
from test_checkpoint import TINY, write_run_shards


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.AdaptiveAvgPool1d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))


def snapshot(model, optimizer) -> dict:
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, s in enumerate(optimizer.state.values()):
        state.update({f"opt{i}.{k}": v.clone() for k, v in s.items()})
    return state


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def step(model, optimizer, guard, x, scaler=None, ctx=None):
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    return train_step(model, optimizer, scaler, ctx or torch.autocast("cpu", enabled=False), x,
                      torch.tensor([0, 1]), guard=guard)


X = torch.randn(2, 1, 16)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_a_nan_batch_changes_no_weight_no_statistic_and_no_optimizer_state(optimizer):
    model = small_model()
    opt = build_optimizer(optimizer, model, lr=1e-2)
    guard = NonFiniteGuard(model, limit=3)
    step(model, opt, guard, X)                       # a real step: the optimizer has state now
    before = snapshot(model, opt)
    loss, _ = step(model, opt, guard, torch.full_like(X, math.nan))
    assert not torch.isfinite(loss)
    assert same(before, snapshot(model, opt)), "a skipped step changed the weights, BN statistics or Adam state"
    assert guard.poll() == (1, 1) and not guard.tripped()
    step(model, opt, guard, X)                       # a finite step after it: taken, the run of skips ends
    assert not same(before, snapshot(model, opt)) and guard.poll() == (1, 0)


def test_a_poisoned_gradient_is_skipped_and_the_limit_trips():
    model = small_model()
    opt = build_optimizer("adamw", model, lr=1e-2)
    guard = NonFiniteGuard(model, limit=3)
    step(model, opt, guard, X)
    model[4].weight.register_hook(lambda g: g * math.inf)   # from now on: one infinite gradient
    before = snapshot(model, opt)
    for expected in (1, 2, 3):
        loss, _ = step(model, opt, guard, X)
        assert torch.isfinite(loss)                      # the loss was fine: the gradient was not
        assert guard.poll() == (expected, expected)
        assert guard.tripped() == (expected == 3)
    assert guard.tripped() and same(before, snapshot(model, opt))


def test_fp16_with_its_grad_scaler_skips_through_the_same_path():
    model = small_model()
    opt = build_optimizer("adam", model, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, enabled=True)
    guard = NonFiniteGuard(model)
    step(model, opt, guard, X, scaler)
    before = snapshot(model, opt)
    step(model, opt, guard, torch.full_like(X, math.inf), scaler)
    assert same(before, snapshot(model, opt)) and scaler.get_scale() == 2.0 ** 15 and guard.poll() == (1, 1)


def test_an_unfused_optimizer_is_guarded_too():
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)   # e.g. restored from an older last.pt
    guard = NonFiniteGuard(model)
    step(model, opt, guard, X)
    before = snapshot(model, opt)
    step(model, opt, guard, torch.full_like(X, math.nan))
    assert same(before, snapshot(model, opt))


def test_the_verdict_is_a_device_tensor_of_loss_and_gradients():
    g = [torch.ones(3), torch.zeros(2)]
    assert non_finite(torch.tensor(1.0), g).item() == 0.0
    assert non_finite(torch.tensor(math.nan), g).item() == 1.0
    assert non_finite(torch.tensor(1.0), [torch.ones(3), torch.tensor([1.0, -math.inf])]).item() == 1.0
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer("adamw", model, lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    weight = model.weight.detach().clone()
    step_unless(opt, torch.tensor(1.0))
    assert torch.equal(weight, model.weight) and not hasattr(opt, "found_inf")
    step_unless(opt, torch.tensor(0.0))
    assert not torch.equal(weight, model.weight)


# ------------------------------------------------------------------------------------------ in a run
@pytest.fixture
def shards(tmp_path):
    return write_run_shards(tmp_path / "shards", {"training": [2, 2, 2, 2], "validation": [2, 1]})


def poison(monkeypatch, *, batches=(), gradients=False, eval_after_steps=None):
    """Make train()'s model: NaN inputs in the listed training forward passes (1-based), an infinite gradient
    on every step, or NaN outputs in evaluation once `eval_after_steps` training steps have run."""
    build = loop_module.build_model
    calls = {"train": 0}

    def built(*args, **kwargs):
        model = build(*args, **kwargs)

        def pre(module, inputs):
            if module.training:
                calls["train"] += 1
                if calls["train"] in batches:
                    return (torch.full_like(inputs[0], math.nan),)
            elif eval_after_steps is not None and calls["train"] >= eval_after_steps:
                return (torch.full_like(inputs[0], math.nan),)
            return None
        model.register_forward_pre_hook(pre)
        if gradients:
            next(model.parameters()).register_hook(lambda g: g * math.nan)
        return model
    monkeypatch.setattr(loop_module, "build_model", built)
    return calls


def config(shards, out, **kw) -> TrainConfig:
    return TrainConfig(shards=str(shards), out=str(out), **{**TINY, "precise_bn": 0, **kw}, verbose=False)


def test_a_nan_batch_is_skipped_counted_and_the_run_is_done(shards, tmp_path, monkeypatch, capsys):
    poison(monkeypatch, batches={3})   # 4 steps an epoch; the 3rd forward pass trains on NaN
    run = tmp_path / "run"
    result = train(TrainConfig(**{**config(shards, run).as_dict(), "verbose": True}))
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["nonfinite_steps"] for r in records] == [1, 0] and records[-1]["nonfinite_steps_total"] == 1
    assert result.nonfinite_steps == 1 and result.steps == 8
    out = capsys.readouterr().out
    assert "1 non-finite steps skipped" in out.splitlines()[0]          # the epoch's line
    assert out.strip().splitlines()[-1].startswith("done:") and ", 1 non-finite steps skipped" in out
    state = load_checkpoint(run / "last.pt")
    assert state["nonfinite_steps"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_steps_in_a_row_stop_training_with_one_line(shards, tmp_path, monkeypatch):
    poison(monkeypatch, gradients=True)
    with pytest.raises(NonFiniteStop) as caught:
        train(config(shards, tmp_path / "run", max_nonfinite_steps=3, epochs=5))
    message = str(caught.value)
    assert "\n" not in message
    for part in ("step 3 ", "epoch 1/5", "3 steps in a row", "model soundnet-large", "fp32", "device cpu",
                 "--lr (now 0.001)", "--amp"):
        assert part in message, (part, message)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_bf16_stop_names_its_precision(shards, tmp_path, monkeypatch):
    poison(monkeypatch, batches=set(range(1, 100)))
    with pytest.raises(NonFiniteStop, match="bf16 autocast"):
        train(config(shards, tmp_path / "run", max_nonfinite_steps=2, amp=True, amp_dtype="bf16"))


def test_best_pt_never_comes_from_an_epoch_with_a_non_finite_validation_loss(shards, tmp_path, monkeypatch):
    poison(monkeypatch, eval_after_steps=5)   # epoch 1's validation is fine, epoch 2's gives NaN logits
    run = tmp_path / "run"
    result = train(config(shards, run))
    records = read_jsonl(run / "metrics.jsonl")
    assert math.isfinite(records[0]["val_loss"]) and not math.isfinite(records[1]["val_loss"])
    assert result.best_epoch == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1


def test_select_best_passes_over_a_nan_loss_even_with_the_best_accuracy():
    good = {"epoch": 1, "step": 1, "val_loss": 1.0, "val_track_acc_mean": 0.5, "val_track_acc_vote": 0.5}
    best, recent, improved = select_best(None, [], good, True)
    nan = {**good, "epoch": 2, "val_loss": math.nan, "val_track_acc_mean": 1.0}
    best2, recent2, improved2 = select_best(best, recent, nan, True)
    assert improved and not improved2 and best2 is best and recent2 == [0.5]


def test_a_run_never_says_done_over_non_finite_weights(shards, tmp_path, monkeypatch):
    """A weight that goes bad outside any gradient (here: written into after the last epoch) ends the run in
    one line, not in "done"."""
    original = loop_module.train_epoch

    def epoch_then_spoil(run, state, stop, on_step):
        result = original(run, state, stop, on_step)
        if state.epoch == 1:   # the second (last) epoch
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] = math.inf
        return result
    monkeypatch.setattr(loop_module, "train_epoch", epoch_then_spoil)
    with pytest.raises(NonFiniteStop, match="non-finite weights") as caught:
        train(config(shards, tmp_path / "run"))
    assert "\n" not in str(caught.value) and "training ended at step 8" in str(caught.value)


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(shards, tmp_path):
    run = tmp_path / "run"
    train(config(shards, run, epochs=1))
    state = load_checkpoint(run / "last.pt")
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key].view(-1)[0] = math.nan
    save_checkpoint(tmp_path / "bad.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(Exception) as caught:
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path / "bad.pt"), shards=str(shards),
                                           split="validation", device="cpu"))
    message = str(caught.value)
    assert "not finite" in message and key in message and "\n" not in message


def test_evaluate_refusal_is_one_line_in_the_cli(shards, tmp_path, cli_error):
    model = {"w": torch.tensor([1.0, math.inf])}
    save_checkpoint(tmp_path / "bad.pt", {"model_name": "soundnet-large", "model": model, "vocabulary": ["a"],
                                          "window": {}})
    line = cli_error("evaluate", "--checkpoint", tmp_path / "bad.pt", "--shards", shards)
    assert "bad.pt" in line and "not finite" in line and "'w'" in line


def test_the_default_limit_is_the_clis(tmp_path):
    from fmashard.cli.train import NONFINITE_LIMIT as CLI_LIMIT

    assert CLI_LIMIT == NONFINITE_LIMIT == TrainConfig(shards="s", out="o").max_nonfinite_steps
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        TrainConfig(shards="s", out="o", max_nonfinite_steps=0)


def test_a_skipped_step_under_bf16_autocast_keeps_the_weights():
    model = small_model()
    opt = build_optimizer("adamw", model, lr=1e-2)
    guard = NonFiniteGuard(model)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16)
    step(model, opt, guard, X, ctx=ctx)
    before = snapshot(model, opt)
    step(model, opt, guard, torch.full_like(X, math.nan), ctx=torch.autocast("cpu", dtype=torch.bfloat16))
    assert same(before, snapshot(model, opt))
    assert F.softmax(model(X), dim=1).isfinite().all()
