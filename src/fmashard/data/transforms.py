"""Device transforms: the augmentations of the device stage, by role, applied during training only.

    DeviceFeeder(loader, device, window, crop=RandomCrop(), window_transforms=[RandomGain(6)],
                 batch_transforms=[Mixup(0.2)], seed=seed, epoch=epoch)                          # training
    DeviceFeeder(loader, device, window)                                                          # evaluation

Three roles, each its own argument of `DeviceFeeder` and `DaliLoader` (as lhotse's `cut_transforms` and
`input_transforms`), run in this order:

  crop               `window_starts(window, batch, length, generator) -> (B, W)`: where the windows are
                     cut (RandomCrop); none: fixed hops.  It draws first.
  window_transforms  callables `(windows (B*W, L) float32, window, generator) -> windows`, applied in list
                     order by `fmashard.data.windows.finish_windows` (the torch path and the DALI backend
                     alike); they may change `windows` in place (the device stage's own buffer).
  batch_transforms   at most one label-mixing transform (Mixup): `mix_batch(windows, labels, window,
                     generator) -> (windows, MixedLabels)`, run on the (B*W, 1, L) windows with their labels;
                     the batch then carries soft targets (`fmashard.data.targets`).

`DeviceTransforms` holds the three together (what `TrainConfig.transforms()` returns).  Random draws come
from `generator`, seeded per (seed, epoch, batch index) by `batch_generator` and drawn in the order above,
so a resumed run draws exactly what the interrupted one would have.

Training augmentations by name (`--augment`): `parse_augment("gain=6,polarity,mixup=0.2")` ->
DeviceTransforms(window_transforms=(RandomGain(db=6), RandomPolarity(p=0.5)), batch_transforms=(Mixup(alpha=0.2),)),
in the order of `AUGMENTATIONS` whatever the order written; the table gives each its role.  Gain and
polarity draw once per track: all windows of a track get the same factor.  To add one: a class here and
an entry in `AUGMENTATIONS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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

    def window_starts(self, window: WindowSpec, batch: int, length: int,
                      generator: torch.Generator | None) -> torch.Tensor:
        """(B, W) start offsets on the CPU, each in [0, length - window.window]."""
        return torch.randint(0, length - window.window + 1, (batch, window.count), generator=generator)

    def __call__(self, windows, window, generator):
        raise TypeError("RandomCrop chooses where the windows are cut: pass it as crop=, not among the "
                        "window transforms")

    def __repr__(self) -> str:
        return "RandomCrop()"


class NormalizeTracks:
    """Per-track normalisation: zero mean, unit variance over all windows of a track."""

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def __call__(self, windows: torch.Tensor, window: WindowSpec, generator) -> torch.Tensor:
        return normalize_tracks(windows, window.count, self.eps)

    def __repr__(self) -> str:
        return f"NormalizeTracks(eps={self.eps:g})"


def normalize_tracks(windows: torch.Tensor, count: int, eps: float = 1e-5) -> torch.Tensor:
    """(B*W, L) windows, each track's `count` windows normalised together."""
    per_track = windows.reshape(-1, count * windows.shape[-1])
    mean = per_track.mean(dim=1, keepdim=True)
    std = per_track.std(dim=1, keepdim=True)
    return ((per_track - mean) / (std + eps)).reshape(windows.shape)


def per_track(windows: torch.Tensor, window: WindowSpec) -> torch.Tensor:
    """(B*W, L) windows as (B, W, L): track b's windows are rows b*W .. b*W + W - 1."""
    return windows.reshape(-1, window.count, windows.shape[-1])


class RandomGain:
    """Each track scaled by a gain drawn uniformly in [-db, +db] dB (all its windows alike; no clipping)."""

    def __init__(self, db: float = 6.0):
        if not (math.isfinite(db) and db > 0):
            raise ValueError(f"RandomGain: db must be a positive number, got {db!r}")
        self.db = float(db)

    def __call__(self, windows: torch.Tensor, window: WindowSpec, generator) -> torch.Tensor:
        tracks = per_track(windows, window)
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

    def __call__(self, windows: torch.Tensor, window: WindowSpec, generator) -> torch.Tensor:
        tracks = per_track(windows, window)
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

    def mix_batch(self, windows: torch.Tensor, labels: torch.Tensor, window: WindowSpec, generator):
        """(B*W, 1, L) windows and (B*W,) labels -> (mixed windows, MixedLabels)."""
        tracks = per_track(windows, window)
        partner, weight = self.draw(tracks.shape[0], generator)
        partner, weight = to_device(partner, windows.device), to_device(weight, windows.device)
        mixed = tracks.index_select(0, partner).lerp_(tracks, weight.view(-1, 1, 1))   # w * own + (1-w) * partner
        track_labels = labels.reshape(-1, window.count)[:, 0]
        mix = MixedLabels(track_labels[partner].repeat_interleave(window.count), weight.repeat_interleave(window.count))
        return mixed.reshape(windows.shape), mix

    def __call__(self, windows, window, generator):
        raise TypeError("Mixup mixes the labels too: pass it as batch_transforms= (run after the window "
                        "transforms), not among the window transforms")

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha:g})"


@dataclass(frozen=True)
class DeviceTransforms:
    """The device transforms of a batch by role (the module docstring): the arguments `crop`,
    `window_transforms` and `batch_transforms` of `DeviceFeeder` and `DaliLoader`.  ValueError for more than
    one batch transform (the labels can be mixed once)."""
    crop: RandomCrop | None = None
    window_transforms: tuple = ()
    batch_transforms: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "window_transforms", tuple(self.window_transforms))
        object.__setattr__(self, "batch_transforms", tuple(self.batch_transforms))
        if len(self.batch_transforms) > 1:
            raise ValueError(f"at most one label-mixing transform, got {', '.join(map(repr, self.batch_transforms))}")

    def __bool__(self) -> bool:
        return self.crop is not None or bool(self.window_transforms or self.batch_transforms)

    def generator(self, seed: int, epoch: int, index: int) -> torch.Generator | None:
        """The `batch_generator` of batch `index`, or None when there is nothing to draw."""
        return batch_generator(seed, epoch, index) if self else None


def mix_batch(windows: torch.Tensor, labels: torch.Tensor, window: WindowSpec, generator, batch_transforms=()):
    """The batch transform, if any, on the (B*W, 1, L) windows: (windows, MixedLabels or None)."""
    mix = None
    for transform in batch_transforms:
        windows, mix = transform.mix_batch(windows, labels, window, generator)
    return windows, mix


# name -> (class, its parameter, its role): `name=value`, or `name` alone for the class's default
AUGMENTATIONS = {
    "gain": (RandomGain, "db", "window_transforms"),
    "polarity": (RandomPolarity, "p", "window_transforms"),
    "mixup": (Mixup, "alpha", "batch_transforms"),
}
AUGMENT_SYNTAX = "gain[=DB],polarity[=P],mixup[=ALPHA]"


def parse_augment(text: str | None) -> DeviceTransforms:
    """`"gain=6,polarity,mixup=0.2"` -> DeviceTransforms(window_transforms=(RandomGain(db=6),
    RandomPolarity(p=0.5)), batch_transforms=(Mixup(alpha=0.2),)): each in its role, in the order of
    AUGMENTATIONS; "" or "none" -> DeviceTransforms() (none).  One-line UserError for an unknown name, a value
    that is not a number or out of range, or a name given twice."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return DeviceTransforms()
    chosen: dict[str, float | None] = {}
    for item in text.split(","):
        name, equals, value = (part.strip() for part in item.partition("="))
        if name not in AUGMENTATIONS:
            raise UserError(f"augment: unknown augmentation {name!r} in {text!r} (known: {AUGMENT_SYNTAX})")
        if name in chosen:
            raise UserError(f"augment: {name} is given twice in {text!r}")
        chosen[name] = _number(name, value, text) if equals else None
    roles: dict[str, list] = {"window_transforms": [], "batch_transforms": []}
    for name, (cls, param, role) in AUGMENTATIONS.items():
        if name in chosen:
            try:
                roles[role].append(cls() if chosen[name] is None else cls(**{param: chosen[name]}))
            except ValueError as exc:
                raise UserError(f"augment: {name}={chosen[name]:g}: {exc}") from None
    return DeviceTransforms(**roles)


def _number(name: str, value: str, text: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"augment: {name}={value!r} in {text!r} is not a number")
    return number
