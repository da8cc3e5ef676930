"""Per-track results across clips: a track cut into several clips (`fmashard build --long-tracks all`) is
several records, in any batches and on any ranks.  `TrackTotals` keeps, per record, its vote counts,
logit sums (C values each), label and track id on the device; at the end of a
pass `reduced()` gathers them from every rank and `result()` sums them per track:
  - vote:        the majority of all windows of all the track's clips (ties -> lowest class index);
  - mean logits: argmax of the mean logits over all those windows.
So a track counts once whatever its number of clips, and its prediction weighs every window alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrackResult:
    tracks: int
    acc_vote: float | None
    acc_mean: float | None
    confusion: tuple[tuple[int, ...], ...]   # [true][predicted] track counts, vote predictions


class TrackTotals:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.votes: list[torch.Tensor] = []        # (records, C) per batch, on the device
        self.logit_sums: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.track_ids: list[torch.Tensor] = []

    def add(self, votes: torch.Tensor, logit_sums: torch.Tensor, labels: torch.Tensor,
            track_ids: torch.Tensor) -> None:
        """One batch: per record its (C,) vote counts and logit sums, label and track id (device tensors,
        kept there until the pass ends)."""
        self.votes.append(votes.detach().to(torch.float64))
        self.logit_sums.append(logit_sums.detach().to(torch.float64))
        self.labels.append(labels.detach())
        self.track_ids.append(track_ids.detach())

    def _rows(self) -> tuple[torch.Tensor, ...]:
        """(ids, labels, votes, logit sums) of this rank's records, on the host."""
        if not self.votes:
            empty = torch.zeros(0, self.num_classes, dtype=torch.float64)
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), empty, empty.clone()
        return (torch.cat(self.track_ids).cpu().long(), torch.cat(self.labels).cpu().long(),
                torch.cat(self.votes).cpu(), torch.cat(self.logit_sums).cpu())

    def reduced(self) -> TrackTotals:
        """Every rank's records (collective when distributed: every rank calls it)."""
        rows = self._rows()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = tuple(torch.cat([g[i] for g in gathered]) for i in range(4))
        out = TrackTotals(self.num_classes)
        out.track_ids, out.labels, out.votes, out.logit_sums = ([r] for r in rows)
        return out

    def result(self) -> TrackResult:
        ids, labels, votes, logit_sums = self._rows()
        if len(ids) != len(votes):
            raise RuntimeError(f"{len(ids)} track ids for {len(votes)} records")
        unique, inverse = torch.unique(ids, return_inverse=True)
        n, c = len(unique), self.num_classes
        track_votes = torch.zeros(n, c, dtype=torch.float64).index_add_(0, inverse, votes)
        track_logits = torch.zeros(n, c, dtype=torch.float64).index_add_(0, inverse, logit_sums)
        track_labels = torch.zeros(n, dtype=torch.int64).scatter_(0, inverse, labels)
        vote_pred, mean_pred = track_votes.argmax(dim=1), track_logits.argmax(dim=1)
        confusion = torch.zeros(c * c, dtype=torch.int64).index_add_(
            0, track_labels * c + vote_pred, torch.ones_like(vote_pred)).view(c, c)
        return TrackResult(n, (vote_pred == track_labels).double().mean().item() if n else None,
                           (mean_pred == track_labels).double().mean().item() if n else None,
                           tuple(tuple(row) for row in confusion.tolist()))
