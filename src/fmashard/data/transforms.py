"""Device transforms: the augmentations of the device stage, as a list applied during training only.

    DeviceFeeder(loader, device, window, transforms=[RandomCrop()], seed=seed, epoch=epoch)  # training
    DeviceFeeder(loader, device, window)                                                     # evaluation

A transform is a callable `(windows (B*W, L) float32, spec, generator) -> windows`, applied in list order
by `fmashard.data.windows.finish_windows` (the torch path and the DALI backend alike).  A transform that
also has `window_starts(spec, batch, length, generator) -> (B, W)` chooses where the windows are cut
(RandomCrop); it draws first.  Random draws come from `generator`, seeded per (seed, epoch, batch index) by
`batch_generator`, so a resumed run draws exactly what the interrupted one would have.

To add one (say a random gain): a class here, and one line where the training list is built
(`fmashard.train.config.TrainConfig.transforms`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fmashard.data.windows import WindowSpec


def batch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The (CPU) generator of batch `index` of `epoch`: the same draws on every run and after a resume."""
    return torch.Generator().manual_seed(hash((seed, epoch, index)) & 0x7FFF_FFFF)


class RandomCrop:
    """Window starts drawn uniformly per window (anywhere in the clip) instead of at fixed hops."""

    def window_starts(self, spec: WindowSpec, batch: int, length: int,
                      generator: torch.Generator | None) -> torch.Tensor:
        """(B, W) start offsets on the CPU, each in [0, length - window]."""
        return torch.randint(0, length - spec.window + 1, (batch, spec.count), generator=generator)

    def __call__(self, windows: torch.Tensor, spec: WindowSpec, generator) -> torch.Tensor:
        return windows   # the crop happened when the windows were cut

    def __repr__(self) -> str:
        return "RandomCrop()"


class NormalizeTracks:
    """Per-track normalisation: zero mean, unit variance over all windows of a track."""

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def __call__(self, windows: torch.Tensor, spec: WindowSpec, generator) -> torch.Tensor:
        return normalize_tracks(windows, spec.count, self.eps)

    def __repr__(self) -> str:
        return f"NormalizeTracks(eps={self.eps:g})"


def normalize_tracks(windows: torch.Tensor, count: int, eps: float = 1e-5) -> torch.Tensor:
    """(B*W, L) windows, each track's `count` windows normalised together."""
    per_track = windows.reshape(-1, count * windows.shape[-1])
    mean = per_track.mean(dim=1, keepdim=True)
    std = per_track.std(dim=1, keepdim=True)
    return ((per_track - mean) / (std + eps)).reshape(windows.shape)
