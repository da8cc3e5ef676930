"""Metrics: loss, window accuracy, clip accuracy over each record's windows, and track accuracy over all
windows of all clips of a track.

Every record's W windows travel together in one batch (`make_windows` keeps them consecutive), so a
record's (a clip's) prediction needs no bookkeeping across batches:
  - vote:        the majority of the windows' argmax (ties -> lowest class index, as the notebook's
                 `np.argmax(np.bincount(...))`);
  - mean logits: argmax of the windows' mean logits.
A track cut into several clips (`fmashard build --long-tracks all`) has several records, in any batches
and on any ranks: evaluation keeps each record's vote counts and logit sums with its track id
(`fmashard.train.tracks.TrackTotals`) and counts each track once at the end.  With one clip per track
the clip and track figures are the same.
Totals stay on the device during a pass, and counts known on the host stay on the host (no host<->device
traffic per step); they are summed over ranks once at a pass's end (each rank sees distinct records, so
the sums are exact).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fmashard.train.distributed import all_reduce_sum
from fmashard.train.tracks import TrackTotals


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
    clips: int | None = None        # records evaluated (None: as many as tracks)
    clip_acc_vote: float | None = None

    def __post_init__(self):
        if self.clips is None:     # one clip per track: the clip figures are the track figures
            object.__setattr__(self, "clips", self.tracks)
            object.__setattr__(self, "clip_acc_vote", self.track_acc_vote)

    def as_dict(self, prefix: str = "") -> dict:
        d = asdict(self)
        d.pop("confusion")
        return {f"{prefix}{k}": v for k, v in d.items()}


class MetricTotals:
    """Running sums: on the device loss*windows, correct windows, records right by vote, records right by
    mean logits and the vote confusion matrix; on the host the counts of windows and records (known
    there, so a step copies nothing to the device).  A record is one clip (one track unless the build
    cut tracks into clips); `fmashard.train.tracks.TrackTotals` groups records by track."""

    def __init__(self, num_classes: int, device: torch.device, by_track: bool = False):
        self.num_classes = num_classes
        self.tracks = TrackTotals(num_classes) if by_track else None
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.windows = self.records = 0
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, num_tracks: int, loss: torch.Tensor,
            track_ids: torch.Tensor | None = None) -> None:
        """`num_tracks` records of `logits.shape[0] // num_tracks` windows each; `track_ids` (one per
        window, needed `by_track`) files each record's votes under its track."""
        if not num_tracks:   # a batch whose every track was skipped (on_error=skip)
            return
        logits = logits.detach().float()
        windows = logits.shape[0]
        per_track = windows // num_tracks
        track_labels = labels[::per_track]
        window_pred = logits.argmax(dim=1)
        votes = F.one_hot(window_pred, self.num_classes).view(num_tracks, per_track, -1).sum(dim=1)
        vote_pred = votes.argmax(dim=1)          # first maximum: ties go to the lowest class index
        logit_sums = logits.view(num_tracks, per_track, -1).sum(dim=1)
        mean_pred = logit_sums.argmax(dim=1)
        self.sums += torch.stack([loss.detach().double() * windows,
                                  (window_pred == labels).sum().double(),
                                  (vote_pred == track_labels).sum().double(),
                                  (mean_pred == track_labels).sum().double()])
        self.windows, self.records = self.windows + windows, self.records + num_tracks
        self.confusion.view(-1).index_add_(0, track_labels * self.num_classes + vote_pred,
                                           torch.ones_like(vote_pred))
        if self.tracks is not None:
            self.tracks.add(votes, logit_sums, track_labels, track_ids[::per_track])

    def _all_sums(self) -> torch.Tensor:
        """(loss*windows, correct windows, windows, right by vote, right by mean, records): the saved layout."""
        s, counts = self.sums, torch.tensor([self.windows, self.records], dtype=torch.float64)
        return torch.cat([s[:2], counts[:1].to(s.device), s[2:], counts[1:].to(s.device)])

    def state(self) -> dict:
        return {"sums": self._all_sums().cpu(), "confusion": self.confusion.cpu()}

    def load(self, state: dict) -> None:
        loss, correct, windows, vote, mean, records = state["sums"].tolist()
        self.sums.copy_(torch.tensor([loss, correct, vote, mean], dtype=torch.float64))
        self.windows, self.records = int(windows), int(records)
        self.confusion.copy_(state["confusion"])

    def reduced(self) -> MetricTotals:
        """A copy summed over ranks (collective: every rank calls it)."""
        out = MetricTotals(self.num_classes, self.sums.device)
        out.tracks = self.tracks.reduced() if self.tracks is not None else None
        out.load({"sums": all_reduce_sum(self._all_sums()).cpu(),
                  "confusion": all_reduce_sum(self.confusion.clone())})
        return out

    def result(self, skipped: int = 0) -> EvalMetrics:
        """The metrics; `by_track`, track accuracy counts each track once over all its clips, and the
        confusion matrix counts tracks (call it on `reduced()` totals: every rank's records)."""
        loss, correct, vote, mean = self.sums.tolist()
        windows, records = self.windows, self.records
        confusion = tuple(tuple(row) for row in self.confusion.tolist())
        clip_vote = ratio(vote, records)
        if self.tracks is None:
            return EvalMetrics(ratio(loss, windows), ratio(correct, windows), clip_vote, ratio(mean, records),
                               windows, records, int(skipped), confusion)
        by_track = self.tracks.result()
        return EvalMetrics(ratio(loss, windows), ratio(correct, windows), by_track.acc_vote, by_track.acc_mean,
                           windows, by_track.tracks, int(skipped), by_track.confusion, records, clip_vote)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None
