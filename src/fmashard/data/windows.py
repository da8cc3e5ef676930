"""Decode/window stage: pure tensor functions, the same code on CPU and GPU.

    int16 or float16 (B, N)  --decode-->  float32 in [-1, 1)  --window-->  (B*W, 1, L), labels repeated

Defaults follow the original notebook: 5 s windows at 22,050 Hz (110,250 samples), 25 % overlap
(hop = 110,250 - int(0.25 * 110,250) = 82,688), 7 windows per track.  `random_crop` draws the window
starts uniformly per window instead (training augmentation), from a seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PCM16_SCALE = 1.0 / 32768.0


@dataclass(frozen=True)
class WindowSpec:
    window: int = 110_250
    overlap: float = 0.25
    count: int = 7
    random_crop: bool = False
    normalize: bool = False

    def __post_init__(self):
        if self.window < 1 or self.count < 1:
            raise ValueError(f"window and count must be >= 1, got {self.window}, {self.count}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")

    @property
    def hop(self) -> int:
        return self.window - int(self.window * self.overlap)

    def span(self) -> int:
        """Samples a track needs for `count` fixed windows."""
        return (self.count - 1) * self.hop + self.window

    @classmethod
    def seconds(cls, window_seconds: float = 5.0, sample_rate: int = 22050, **kw) -> "WindowSpec":
        return cls(window=int(round(window_seconds * sample_rate)), **kw)


def decode(audio: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw shard audio (any shape, any strides) -> float32 in [-1, 1): int16 is scaled by 1/32768,
    float16 is widened.  A converting copy, then an in-place scale: both are vectorised kernels,
    where one mixed-dtype `mul` is not (on this CPU the two passes are 1.4-2x faster than one).
    `out`: a contiguous float32 tensor of as many elements to write into (a reused buffer)."""
    if out is None:
        out = torch.empty(audio.shape, dtype=torch.float32, device=audio.device)
    out = out.view(audio.shape).copy_(audio)
    return out.mul_(PCM16_SCALE) if audio.dtype == torch.int16 else out


def window_starts(spec: WindowSpec, batch: int, length: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """(B, W) start offsets: fixed hops, or uniform random ones for `random_crop`."""
    if spec.random_crop:
        high = length - spec.window + 1
        return torch.randint(0, high, (batch, spec.count), generator=generator).to(device)
    return (torch.arange(spec.count) * spec.hop).expand(batch, spec.count).to(device)


def make_windows(audio: torch.Tensor, labels: torch.Tensor, spec: WindowSpec = WindowSpec(),
                 generator: torch.Generator | None = None, track_ids: torch.Tensor | None = None,
                 out: torch.Tensor | None = None):
    """(B, N) raw audio -> ((B*W, 1, L) float32 windows, (B*W,) labels[, (B*W,) track ids]).
    `out`: optional contiguous float32 buffer of B*W*L elements for the windows.

    The fixed-hop path converts the strided int16 view straight into the float output (one pass, no
    float copy of the whole clip); random crops gather the chosen windows from a step-1 view."""
    batch, length = audio.shape
    if length < spec.span() and not spec.random_crop:
        raise ValueError(f"clips of {length} samples are shorter than {spec.count} windows need ({spec.span()})")
    if length < spec.window:
        raise ValueError(f"clips of {length} samples are shorter than one window ({spec.window})")
    if spec.random_crop:
        starts = window_starts(spec, batch, length, generator, audio.device)
        rows = torch.arange(batch, device=audio.device).repeat_interleave(spec.count)
        view = audio.unfold(1, spec.window, 1)[rows, starts.reshape(-1)]   # gathers only the windows
    else:
        view = audio.unfold(1, spec.window, spec.hop)[:, : spec.count]   # (B, W, L) strided view
    windows = decode(view, out).reshape(batch * spec.count, spec.window)
    if spec.normalize:
        windows = normalize_tracks(windows, spec.count)
    out = (windows.unsqueeze(1), labels.repeat_interleave(spec.count))
    if track_ids is not None:
        out = out + (track_ids.repeat_interleave(spec.count),)
    return out


def normalize_tracks(windows: torch.Tensor, count: int, eps: float = 1e-5) -> torch.Tensor:
    """Per-track normalisation: zero mean, unit variance over all windows of a track."""
    per_track = windows.reshape(-1, count * windows.shape[-1])
    mean = per_track.mean(dim=1, keepdim=True)
    std = per_track.std(dim=1, keepdim=True)
    return ((per_track - mean) / (std + eps)).reshape(windows.shape)
