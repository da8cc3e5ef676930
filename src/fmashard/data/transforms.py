"""Device transforms: the augmentations of the device stage, as a list applied during training only.

    DeviceFeeder(loader, device, window, transforms=[RandomCrop()], seed=seed, epoch=epoch)  # training
    DeviceFeeder(loader, device, window)                                                     # evaluation

A transform is a callable `(windows (B*W, L) float32, spec, generator) -> windows`, applied in list order
by `fmashard.data.windows.finish_windows` (the torch path and the DALI backend alike); it may change
`windows` in place (they are the device stage's own buffer).  A transform that also has
`window_starts(spec, batch, length, generator) -> (B, W)` chooses where the windows are cut (RandomCrop);
it draws first.  A label-mixing transform (Mixup) has `mix_batch(windows, labels, spec, generator) ->
(windows, MixedLabels)` instead: the device stage runs it after all the others, on the (B*W, 1, L)
windows with their labels, and the batch then carries soft targets (`fmashard.data.targets`).  Random
draws come from `generator`, seeded per (seed, epoch, batch index) by `batch_generator` and drawn in
list order, so a resumed run draws exactly what the interrupted one would have.

Training augmentations by name (`--augment`): `parse_augment("gain=6,polarity,mixup=0.2")` ->
[RandomGain(db=6), RandomPolarity(p=0.5), Mixup(alpha=0.2)], in the order of `AUGMENTATIONS` whatever the
order written (mixing comes last).  Gain and polarity draw once per track: all windows of a track get
the same factor.  To add one: a class here and an entry in `AUGMENTATIONS`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from fmashard.data.targets import MixedLabels
from fmashard.data.windows import to_device
from fmashard.errors import UserError

if TYPE_CHECKING:
    from fmashard.data.windows import WindowSpec  # noqa: F401 - annotations


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


def per_track(windows: torch.Tensor, spec: WindowSpec) -> torch.Tensor:
    """(B*W, L) windows as (B, W, L): track b's windows are rows b*W .. b*W + W - 1."""
    return windows.reshape(-1, spec.count, windows.shape[-1])


class RandomGain:
    """Each track scaled by a gain drawn uniformly in [-db, +db] dB (all its windows alike; no clipping)."""

    def __init__(self, db: float = 6.0):
        if not (math.isfinite(db) and db > 0):
            raise ValueError(f"RandomGain: db must be a positive number, got {db!r}")
        self.db = float(db)

    def __call__(self, windows: torch.Tensor, spec: WindowSpec, generator) -> torch.Tensor:
        tracks = per_track(windows, spec)
        gain_db = (torch.rand(tracks.shape[0], generator=generator) * 2 - 1) * self.db
        gain = to_device(torch.pow(10.0, gain_db / 20), windows.device)
        return tracks.mul_(gain.view(-1, 1, 1)).reshape(windows.shape)

    def __repr__(self) -> str:
        return f"RandomGain(db={self.db:g})"


class RandomPolarity:
    """Each track's sign flipped with probability `p` (all its windows alike)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomPolarity: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, windows: torch.Tensor, spec: WindowSpec, generator) -> torch.Tensor:
        tracks = per_track(windows, spec)
        flip = torch.rand(tracks.shape[0], generator=generator) < self.p
        return tracks.mul_(to_device(1.0 - 2.0 * flip.float(), windows.device).view(-1, 1, 1)).reshape(windows.shape)

    def __repr__(self) -> str:
        return f"RandomPolarity(p={self.p:g})"


class Mixup:
    """mixup (Zhang et al. 2018) over the tracks of a batch: track b becomes lam_b * b + (1 - lam_b) * partner_b,
    with a shuffled partner (a permutation of the batch) and lam_b ~ Beta(alpha, alpha) folded to
    max(lam, 1 - lam), so every window of track b gets the same partner and weight and its own label keeps
    the larger share (the hard labels, which the metrics score, stay the majority of each target).
    The labels are mixed alike: the batch's `mix` (`fmashard.data.targets.MixedLabels`)."""

    def __init__(self, alpha: float = 0.2):
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"Mixup: alpha must be a positive number, got {alpha!r}")
        self.alpha = float(alpha)

    def draw(self, tracks: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(partner of each track, own weight of each track), on the CPU, from `generator` alone (torch has
        no seeded Beta sampler: numpy's, seeded by the batch generator's seed, which `batch_generator` makes
        from (seed, epoch, batch), so nothing is read back from a tensor)."""
        partner = torch.randperm(tracks, generator=generator)
        lam = np.random.default_rng([generator.initial_seed(), 0xB37A]).beta(self.alpha, self.alpha, size=tracks)
        return partner, torch.from_numpy(np.maximum(lam, 1 - lam)).float()

    def mix_batch(self, windows: torch.Tensor, labels: torch.Tensor, spec: WindowSpec, generator):
        """(B*W, 1, L) windows and (B*W,) labels -> (mixed windows, MixedLabels)."""
        tracks = per_track(windows, spec)
        partner, weight = self.draw(tracks.shape[0], generator)
        partner, weight = to_device(partner, windows.device), to_device(weight, windows.device)
        mixed = tracks.index_select(0, partner).lerp_(tracks, weight.view(-1, 1, 1))   # w * own + (1-w) * partner
        track_labels = labels.reshape(-1, spec.count)[:, 0]
        mix = MixedLabels(track_labels[partner].repeat_interleave(spec.count), weight.repeat_interleave(spec.count))
        return mixed.reshape(windows.shape), mix

    def __call__(self, windows, spec, generator):
        raise TypeError("Mixup mixes the labels too: give it to DeviceFeeder / DaliLoader (which run it after the "
                        "other transforms), not to make_windows")

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha:g})"


def split_transforms(transforms) -> tuple[tuple, tuple]:
    """(the transforms of the windows, the label-mixing one, if any): the device stage runs the second after
    the first.  ValueError for two label-mixing transforms (the labels can be mixed once)."""
    transforms = tuple(transforms)
    mixers = tuple(t for t in transforms if hasattr(t, "mix_batch"))
    if len(mixers) > 1:
        raise ValueError(f"at most one label-mixing transform, got {', '.join(map(repr, mixers))}")
    return tuple(t for t in transforms if not hasattr(t, "mix_batch")), mixers


def mix_windows(windows: torch.Tensor, labels: torch.Tensor, spec: WindowSpec, generator, mixers=()):
    """The label-mixing transform of `split_transforms`, if any: (windows, MixedLabels or None)."""
    for mixer in mixers:
        return mixer.mix_batch(windows, labels, spec, generator)
    return windows, None


# name -> (class, its parameter): `name=value`, or `name` alone for the class's default
AUGMENTATIONS = {
    "gain": (RandomGain, "db"),
    "polarity": (RandomPolarity, "p"),
    "mixup": (Mixup, "alpha"),
}
AUGMENT_SYNTAX = "gain[=DB],polarity[=P],mixup[=ALPHA]"


def parse_augment(text: str | None) -> list:
    """`"gain=6,polarity,mixup=0.2"` -> [RandomGain(db=6), RandomPolarity(p=0.5), Mixup(alpha=0.2)] (in
    the order of AUGMENTATIONS); "" or "none" -> [].  One-line UserError for an unknown name, a value
    that is not a number or out of range, or a name given twice."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    chosen: dict[str, float | None] = {}
    for item in text.split(","):
        name, equals, value = (part.strip() for part in item.partition("="))
        if name not in AUGMENTATIONS:
            raise UserError(f"augment: unknown augmentation {name!r} in {text!r} (known: {AUGMENT_SYNTAX})")
        if name in chosen:
            raise UserError(f"augment: {name} is given twice in {text!r}")
        chosen[name] = _number(name, value, text) if equals else None
    out = []
    for name, (cls, param) in AUGMENTATIONS.items():
        if name in chosen:
            try:
                out.append(cls() if chosen[name] is None else cls(**{param: chosen[name]}))
            except ValueError as exc:
                raise UserError(f"augment: {name}={chosen[name]:g}: {exc}") from None
    return out


def _number(name: str, value: str, text: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"augment: {name}={value!r} in {text!r} is not a number")
    return number
