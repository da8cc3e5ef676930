"""Soft targets: what a label-mixing transform (Mixup) makes of a batch's labels, and the loss on them.

A `DeviceBatch` keeps its hard `labels` (each window's own track label: window and track accuracy score
those) and, after Mixup, a `mix`: each window's partner label and the weight of its own label.  The loss

    loss = soft_cross_entropy(logits, batch.labels, batch.mix)     # plain cross-entropy when mix is None

is then weight * CE(own label) + (1 - weight) * CE(partner label), averaged over the windows: the
cross-entropy against the mixed one-hot targets (`soft_targets`), without building the (N, C) tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixedLabels:
    """Per window: the label mixed in, and the share of the window's own label (the partner has the rest)."""

    partner: torch.Tensor   # (N,) int64
    weight: torch.Tensor    # (N,) float32, in [0.5, 1] for Mixup (its own track keeps the larger share)


def soft_targets(labels: torch.Tensor, num_classes: int, mix: MixedLabels | None = None) -> torch.Tensor:
    """(N, C) float32 target distributions: one-hot labels, or the mixed one-hot pair."""
    targets = F.one_hot(labels, num_classes).float()
    if mix is None:
        return targets
    partner = F.one_hot(mix.partner, num_classes).float()
    weight = mix.weight.float().unsqueeze(1)
    return weight * targets + (1 - weight) * partner


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mix: MixedLabels | None = None) -> torch.Tensor:
    """Mean cross-entropy of (N, C) logits against the hard labels, or against the mixed targets of `mix`
    (computed in float32, as autocast computes `F.cross_entropy`)."""
    if mix is None:
        return F.cross_entropy(logits, labels)
    log_probs = F.log_softmax(logits.float(), dim=1)
    own = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    partner = log_probs.gather(1, mix.partner.unsqueeze(1)).squeeze(1)
    weight = mix.weight.float()
    return -(weight * own + (1 - weight) * partner).mean()
