"""Metrics: loss, window accuracy, and track accuracy over each track's windows.

Every track's W windows travel together in one batch (`make_windows` keeps them consecutive), so track
predictions need no bookkeeping across batches:
  - vote:        the majority of the windows' argmax (ties -> lowest class index, as the notebook's
                 `np.argmax(np.bincount(...))`);
  - mean logits: argmax of the windows' mean logits.
Totals stay on the device during a pass; they are summed over ranks once at its end (each rank sees
distinct tracks, so the sums are exact).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fmashard.train.distributed import all_reduce_sum


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for people: "n/a" where there was nothing to measure (no tracks)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class EvalMetrics:
    loss: float | None              # None: no windows (an empty split), so nothing was measured
    window_acc: float | None
    track_acc_vote: float | None
    track_acc_mean: float | None
    windows: int
    tracks: int
    skipped: int = 0
    confusion: tuple[tuple[int, ...], ...] = ()   # [true][predicted] track counts, vote predictions

    def as_dict(self, prefix: str = "") -> dict:
        d = asdict(self)
        d.pop("confusion")
        return {f"{prefix}{k}": v for k, v in d.items()}


class MetricTotals:
    """Running sums on the device: loss*windows, correct windows, windows, tracks right by vote, tracks
    right by mean logits, tracks; and the vote confusion matrix."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, num_tracks: int, loss: torch.Tensor) -> None:
        if not num_tracks:   # a batch whose every track was skipped (on_error=skip)
            return
        logits = logits.detach().float()
        windows = logits.shape[0]
        per_track = windows // num_tracks
        track_labels = labels[::per_track]
        window_pred = logits.argmax(dim=1)
        votes = F.one_hot(window_pred, self.num_classes).view(num_tracks, per_track, -1).sum(dim=1)
        vote_pred = votes.argmax(dim=1)          # first maximum: ties go to the lowest class index
        mean_pred = logits.view(num_tracks, per_track, -1).mean(dim=1).argmax(dim=1)
        self.sums += torch.stack([loss.detach().double() * windows,
                                  (window_pred == labels).sum().double(),
                                  torch.tensor(windows, dtype=torch.float64, device=logits.device),
                                  (vote_pred == track_labels).sum().double(),
                                  (mean_pred == track_labels).sum().double(),
                                  torch.tensor(num_tracks, dtype=torch.float64, device=logits.device)])
        self.confusion.view(-1).index_add_(0, track_labels * self.num_classes + vote_pred,
                                           torch.ones_like(vote_pred))

    def state(self) -> dict:
        return {"sums": self.sums.cpu(), "confusion": self.confusion.cpu()}

    def load(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.confusion.copy_(state["confusion"])

    def reduced(self) -> MetricTotals:
        """A copy summed over ranks (collective: every rank calls it)."""
        out = MetricTotals(self.num_classes, self.sums.device)
        out.sums.copy_(all_reduce_sum(self.sums.clone()))
        out.confusion.copy_(all_reduce_sum(self.confusion.clone()))
        return out

    def result(self, skipped: int = 0) -> EvalMetrics:
        loss, correct, windows, vote, mean, tracks = self.sums.tolist()

        def ratio(part: float, whole: float) -> float | None:
            return part / whole if whole else None
        return EvalMetrics(ratio(loss, windows), ratio(correct, windows), ratio(vote, tracks),
                           ratio(mean, tracks), int(windows), int(tracks), int(skipped),
                           tuple(tuple(row) for row in self.confusion.tolist()))
