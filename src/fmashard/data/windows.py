"""Decode/window stage: pure tensor functions, the same code on CPU and GPU.

    int16 or float16 (B, N)  --decode-->  float32 in [-1, 1)  --window-->  (B*W, 1, L), labels repeated

Defaults follow the original notebook: 5 s windows at 22,050 Hz (110,250 samples), 25 % overlap
(hop = 110,250 - int(0.25 * 110,250) = 82,688), 7 windows per track.  Augmentations are not part of
the window spec: they are transforms by role (`fmashard.data.transforms`), passed by training only.  A
`crop` (RandomCrop) chooses where the windows are cut; the `window_transforms` are then called, in order,
on the float windows (`finish_windows`, which the DALI backend runs too).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fmashard.format.codecs import decode_widen, decoders_by_dtype

_DECODERS = decoders_by_dtype()   # each shard codec's decode, by the stored dtype


@dataclass(frozen=True)
class WindowSpec:
    window: int = 110_250
    overlap: float = 0.25
    count: int = 7

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
    def seconds(cls, window_seconds: float = 5.0, sample_rate: int = 22050, **kw) -> WindowSpec:
        return cls(window=int(round(window_seconds * sample_rate)), **kw)


def decode(audio: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw shard audio (any shape, any strides) -> float32 in [-1, 1), by the codec of its dtype
    (`fmashard.format.codecs`: pcm16 is scaled by 1/32768, f16 widened; any other dtype is widened).
    `out`: a contiguous float32 tensor of as many elements to write into (a reused buffer)."""
    if out is None:
        out = torch.empty(audio.shape, dtype=torch.float32, device=audio.device)
    return _DECODERS.get(audio.dtype, decode_widen)(audio, out)


def samples_needed(window: WindowSpec, crop=None) -> int:
    """Samples a clip needs: one window with a `crop`, else `count` windows at fixed hops."""
    return window.window if crop is not None else window.span()


def make_windows(audio: torch.Tensor, labels: torch.Tensor, window: WindowSpec = WindowSpec(),
                 generator: torch.Generator | None = None, track_ids: torch.Tensor | None = None,
                 out: torch.Tensor | None = None, crop=None, window_transforms=()):
    """(B, N) raw audio -> ((B*W, 1, L) float32 windows, (B*W,) labels[, (B*W,) track ids]).
    `out`: optional contiguous float32 buffer of B*W*L elements for the windows.  `crop` (None: fixed hops)
    chooses the window starts, then the `window_transforms` run in order; both draw from `generator`.

    The fixed-hop path converts the strided int16 view straight into the float output (one pass, no
    float copy of the whole clip); random crops gather the chosen windows from a step-1 view."""
    batch, length = audio.shape
    if length < window.span() and crop is None:
        raise ValueError(f"clips of {length} samples are shorter than {window.count} windows need ({window.span()})")
    if length < window.window:
        raise ValueError(f"clips of {length} samples are shorter than one window ({window.window})")
    if crop is not None:
        starts = to_device(crop.window_starts(window, batch, length, generator), audio.device)
        rows = torch.arange(batch, device=audio.device).repeat_interleave(window.count)
        view = audio.unfold(1, window.window, 1)[rows, starts.reshape(-1)]   # gathers only the windows
    else:
        view = audio.unfold(1, window.window, window.hop)[:, : window.count]   # (B, W, L) strided view
    windows = decode(view, out).reshape(batch * window.count, window.window)
    return finish_windows(windows, labels, window, generator, track_ids, window_transforms)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor (the draws of a transform, made by the CPU generator) on `device` without a
    host-device synchronisation: on CUDA through pinned memory with a non-blocking copy (torch's pinned
    allocator keeps the buffer until the copy is done); elsewhere as it is."""
    if tensor.device == device:
        return tensor
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def finish_windows(windows: torch.Tensor, labels: torch.Tensor, window: WindowSpec,
                   generator: torch.Generator | None = None, track_ids: torch.Tensor | None = None,
                   window_transforms=()):
    """(B*W, L) float32 windows -> the window transforms applied in order -> (B*W, 1, L), with labels (and track
    ids) repeated W times.  The one post-processing of the torch path and the DALI backend."""
    for transform in window_transforms:
        windows = transform(windows, window, generator)
    out = (windows.unsqueeze(1), labels.repeat_interleave(window.count))
    if track_ids is not None:
        out = out + (track_ids.repeat_interleave(window.count),)
    return out
