"""fmashard.train.tracks / metrics: a track cut into clips counts once, over all windows of all its clips."""
from __future__ import annotations

import torch

from fmashard.train.metrics import MetricTotals


def logits_for(classes: list[int], num_classes: int = 3) -> torch.Tensor:
    """One window per entry, predicting that class."""
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * 5


def test_a_track_of_several_clips_in_several_batches_counts_once():
    totals = MetricTotals(3, torch.device("cpu"), by_track=True)
    loss = torch.tensor(0.5)
    # batch 1: track 7 clip 0 (2 windows, class 1 right), track 9 clip 0 (2 windows: 2, 2 wrong; label 0)
    totals.add(logits_for([1, 1, 2, 2]), torch.tensor([1, 1, 0, 0]), 2, loss, torch.tensor([7, 7, 9, 9]))
    # batch 2: track 7 clip 1 (2 windows: 0, 0 -> wrong clip), track 7 clip 2 (1 right, 1 wrong)
    totals.add(logits_for([0, 0, 1, 0]), torch.tensor([1, 1, 1, 1]), 2, loss, torch.tensor([7, 7, 7, 7]))
    m = totals.reduced().result()
    assert (m.tracks, m.clips, m.windows) == (2, 4, 8)
    # track 7 over its 6 windows: votes class1 = 3, class0 = 3 -> tie goes to class 0: wrong; track 9 wrong
    assert m.track_acc_vote == 0.0
    # clips: 7/0 right, 9/0 wrong, 7/1 wrong, 7/2 tie 0 vs 1 -> class 0: wrong
    assert m.clip_acc_vote == 0.25
    assert m.window_acc == 3 / 8
    assert sum(map(sum, m.confusion)) == 2 and m.confusion[1][0] == 1 and m.confusion[0][2] == 1


def test_mean_logits_weigh_every_window_of_the_track():
    totals = MetricTotals(2, torch.device("cpu"), by_track=True)
    loss = torch.tensor(0.0)
    strong = torch.tensor([[0.0, 9.0]])              # one window, very sure of class 1
    weak = torch.tensor([[1.0, 0.0], [1.0, 0.0]])    # two windows, a little for class 0
    totals.add(strong, torch.tensor([1]), 1, loss, torch.tensor([3]))
    totals.add(weak, torch.tensor([1, 1]), 1, loss, torch.tensor([3, 3]))
    m = totals.reduced().result()
    assert m.tracks == 1 and m.clips == 2
    assert m.track_acc_vote == 0.0          # 2 windows vote 0, one votes 1
    assert m.track_acc_mean == 1.0          # mean logits (2/3, 3) -> class 1


def test_one_clip_per_track_gives_the_same_figures_either_way():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 4), torch.randint(0, 4, (4,)).repeat_interleave(3)
    ids = torch.arange(4).repeat_interleave(3)
    plain, grouped = MetricTotals(4, torch.device("cpu")), MetricTotals(4, torch.device("cpu"), by_track=True)
    plain.add(logits, labels, 4, torch.tensor(1.0))
    grouped.add(logits, labels, 4, torch.tensor(1.0), ids)
    a, b = plain.reduced().result(), grouped.reduced().result()
    assert (a.track_acc_vote, a.track_acc_mean, a.tracks, a.confusion) == (
        b.track_acc_vote, b.track_acc_mean, b.tracks, b.confusion)
    assert b.clips == b.tracks == 4 and a.clip_acc_vote == a.track_acc_vote


def test_state_round_trip_keeps_host_counts():
    totals = MetricTotals(2, torch.device("cpu"))
    totals.add(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), 1, torch.tensor(2.0))
    again = MetricTotals(2, torch.device("cpu"))
    again.load(totals.state())
    assert (again.windows, again.records) == (2, 1)
    assert again.result().loss == 2.0 and again.result().window_acc == 0.5
