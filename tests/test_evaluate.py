"""Evaluation metrics: window accuracy, track accuracy by vote (ties -> lowest class) and by mean logits,
the confusion matrix, and evaluate_checkpoint on synthetic shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from fmashard.models import build_model
from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint, recalibrate_batchnorm
from fmashard.train.metrics import MetricTotals
from test_checkpoint import write_run_shards, write_untrained_checkpoint


def _logits(predictions, num_classes=4, margin=None):
    """Logits whose argmax is `predictions`; `margin[i]` sets how sure window i is."""
    out = torch.zeros(len(predictions), num_classes)
    for i, p in enumerate(predictions):
        out[i, p] = 1.0 if margin is None else margin[i]
    return out


def test_track_vote_matches_the_notebooks_bincount_argmax():
    # 2 tracks x 4 windows; track 0 votes 2,2,1,3 -> 2; track 1 votes 3,1,1,3 -> tie 1/3 -> lowest = 1
    window_pred = [2, 2, 1, 3, 3, 1, 1, 3]
    labels = torch.tensor([2] * 4 + [3] * 4)
    totals = MetricTotals(4, torch.device("cpu"))
    totals.add(_logits(window_pred), labels, num_tracks=2, loss=torch.tensor(0.5))
    m = totals.result()
    notebook = [int(np.argmax(np.bincount(window_pred[i:i + 4]))) for i in (0, 4)]
    assert notebook == [2, 1]
    assert m.track_acc_vote == 0.5           # track 0 right (2), track 1 wrong (tie -> 1, label 3)
    assert m.window_acc == pytest.approx(4 / 8)
    assert (m.windows, m.tracks, m.loss) == (8, 2, pytest.approx(0.5))
    assert m.confusion[2][2] == 1 and m.confusion[3][1] == 1 and sum(map(sum, m.confusion)) == 2


def test_mean_logits_can_disagree_with_the_vote():
    # one very sure window outweighs two unsure ones
    logits = _logits([0, 0, 1], num_classes=2, margin=[0.1, 0.1, 5.0])
    totals = MetricTotals(2, torch.device("cpu"))
    totals.add(logits, torch.tensor([1, 1, 1]), num_tracks=1, loss=torch.tensor(1.0))
    m = totals.result()
    assert (m.track_acc_vote, m.track_acc_mean) == (0.0, 1.0)


def test_totals_accumulate_over_batches_and_round_trip_their_state():
    totals = MetricTotals(3, torch.device("cpu"))
    totals.add(_logits([0, 0], 3), torch.tensor([0, 0]), 1, torch.tensor(1.0))
    totals.add(_logits([1, 2, 2, 2], 3), torch.tensor([2, 2, 1, 1]), 2, torch.tensor(2.0))
    copy = MetricTotals(3, torch.device("cpu"))
    copy.load(totals.state())
    m = copy.reduced().result(skipped=2)  # no process group: reduced() is a plain copy
    assert m.loss == pytest.approx((1.0 * 2 + 2.0 * 4) / 6)
    assert (m.tracks, m.windows, m.skipped) == (3, 6, 2)
    # tracks: [0,0] label 0 -> 0 right; [1,2] label 2 -> tie -> 1 wrong; [2,2] label 1 -> 2 wrong
    assert (m.track_acc_vote, m.window_acc) == (pytest.approx(1 / 3), pytest.approx(3 / 6))
    assert m.confusion == ((1, 0, 0), (0, 0, 1), (0, 1, 0))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Shards with a test split and an (untrained) soundnet-large checkpoint for their vocabulary."""
    root = tmp_path_factory.mktemp("eval")
    shards = write_run_shards(root / "shards", {"training": [2, 2], "test": [2, 1, 2]}, clip_samples=6000)
    vocabulary = write_untrained_checkpoint(root / "run" / "best.pt", shards,
                                            WindowSpec(window=2205, count=3, overlap=0.25))
    return shards, root / "run" / "best.pt", vocabulary


def test_evaluate_checkpoint_counts_every_test_track_once(synthetic, tmp_path):
    shards, checkpoint, vocabulary = synthetic
    report = evaluate_checkpoint(EvaluateConfig(checkpoint=str(checkpoint), shards=str(shards), batch_size=2,
                                                out=str(tmp_path)))
    m = report.metrics
    assert (m.tracks, m.windows) == (5, 15)
    assert sum(map(sum, m.confusion)) == 5
    assert report.summary().startswith("test: 5 tracks, 15 windows | loss ")
    saved = json.loads((tmp_path / "eval_test.json").read_text())
    assert saved["track_acc_vote"] == m.track_acc_vote and saved["split"] == "test"
    confusion = json.loads((tmp_path / "confusion_test.json").read_text())
    assert confusion["vocabulary"] == vocabulary and confusion["matrix"] == [list(r) for r in m.confusion]
    assert (tmp_path / "confusion_test.png").stat().st_size > 1000
    # the default output folder is the checkpoint's
    report = evaluate_checkpoint(EvaluateConfig(checkpoint=str(checkpoint), shards=str(shards), split="training"))
    assert report.metrics.tracks == 4 and (checkpoint.parent / "confusion_training.png").is_file()


def test_recalibrate_batchnorm_replaces_the_running_statistics(synthetic):
    shards, _, vocabulary = synthetic
    model = build_model("soundnet-large", len(vocabulary), 2205)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    loader = ShardLoader(resolve_source(str(shards), "training"), LoaderConfig(batch_size=2, shuffle=False))
    used = recalibrate_batchnorm(model.eval(), loader, torch.device("cpu"), WindowSpec(window=2205, count=2), 5)
    assert used == 2 and not model.training and bn.momentum == 0.1
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert int(bn.num_batches_tracked) == 2
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_the_evaluate_loader_reads_with_the_user_s_read_options(synthetic, tmp_path, monkeypatch):
    import fmashard.train.evaluate as evaluate_module

    shards, checkpoint, _ = synthetic
    made = []

    def recording_loader(spec, config):
        made.append(config)
        return ShardLoader(spec, config)
    monkeypatch.setattr(evaluate_module, "ShardLoader", recording_loader)
    evaluate_checkpoint(EvaluateConfig(checkpoint=str(checkpoint), shards=str(shards), batch_size=2,
                                       out=str(tmp_path), read_threads=3, on_error="skip"))
    assert [(c.read_threads, c.on_error, c.num_workers, c.shuffle) for c in made] == [(3, "skip", 0, False)]
