"""Device stage: host batches -> device-ready float windows, with the next batch already on its way.

On CUDA the raw int16 batch (pinned by the loader) is copied with `non_blocking=True` on a side stream
while the current batch computes; the compute stream waits on an event before decoding it.  On CPU the
same code runs without streams.  Decoding and windowing happen on the device (`fmashard.data.windows`),
then the transforms by role (augmentations, `fmashard.data.transforms`: training passes them, evaluation
none): the `crop` and `window_transforms`, then the `batch_transforms` (Mixup, which leaves soft targets in
`DeviceBatch.mix`), then the `features`
(`fmashard.data.features`: the same for training and evaluation; none: the waveform windows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fmashard.data import recycle
from fmashard.data.targets import MixedLabels
from fmashard.data.transforms import DeviceTransforms, mix_batch
from fmashard.data.windows import WindowSpec, make_windows
from fmashard.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> cuda when present, else cpu.  Asking for cuda without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    return device


@dataclass
class DeviceBatch:
    windows: torch.Tensor     # (B*W, 1, L) float32 waveforms, or their features (logmel: (B*W, 1, M, T))
    labels: torch.Tensor      # (B*W,) int64: each window's own track label (what the metrics score)
    track_ids: torch.Tensor   # (B*W,) int64
    num_tracks: int
    mix: MixedLabels | None = None   # after Mixup: the soft targets of the loss (fmashard.data.targets)


def finish_device_batch(windows: torch.Tensor, labels: torch.Tensor, track_ids: torch.Tensor, num_tracks: int,
                        window: WindowSpec, generator=None, batch_transforms=(), features=None) -> DeviceBatch:
    """The device stage's last steps, on the (B*W, 1, L) transformed windows (the torch path and the DALI
    backend alike): the batch transform, then the features."""
    windows, mix = mix_batch(windows, labels, window, generator, batch_transforms)
    if features is not None:
        windows = features(windows)
    return DeviceBatch(windows, labels, track_ids, num_tracks, mix)


class DeviceFeeder:
    """Iterate `DeviceBatch`es from an iterable of `HostBatch`es, one batch prefetched to the device.

    The transforms, by role (`fmashard.data.transforms`; none: the fixed windows of `window`): `crop` cuts
    the windows, the `window_transforms` run on them in order, then the `batch_transforms` (Mixup) on the
    windows with their labels.  `seed`, `epoch` and the batch index seed their draws (`batch_generator`),
    so a resumed run crops and augments exactly as before.  `features` (a module of `fmashard.data.features`, moved to
    `device` here) turns the windows into what the model takes."""

    def __init__(self, host_batches, device: torch.device, window: WindowSpec = WindowSpec(),
                 seed: int = 0, epoch: int = 0, start_index: int = 0, crop=None, window_transforms=(),
                 batch_transforms=(), features=None):
        self.host_batches, self.device, self.window = host_batches, device, window
        self.seed, self.epoch, self.start_index = seed, epoch, start_index
        self.transforms = DeviceTransforms(crop, window_transforms, batch_transforms)
        self.features = None if features is None else features.to(device)
        self.cuda = device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.rows = 0   # the largest batch seen (CPU window buffers are cached at that size)

    def _to_device(self, batch):
        if not self.cuda:
            return batch.audio, batch.labels, batch.track_ids, None
        with torch.cuda.stream(self.copy_stream):
            audio = batch.rows().to(self.device, non_blocking=True)[:, : batch.audio.shape[1]]
            tensors = (audio, *(t.to(self.device, non_blocking=True) for t in (batch.labels, batch.track_ids)))
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        return (*tensors, event)

    def _finish(self, staged, index: int) -> DeviceBatch:
        audio, labels, track_ids, event = staged
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            for t in (audio, labels, track_ids):  # the allocator must not reuse these too early
                t.record_stream(torch.cuda.current_stream(self.device))
        generator, roles = self.transforms.generator(self.seed, self.epoch, index), self.transforms
        out = None   # CUDA's caching allocator reuses device memory; on the CPU, fmashard.data.recycle does
        if not self.cuda:    # (a short last batch takes the front of a full-size buffer: one shape cached)
            self.rows = max(self.rows, audio.shape[0])
            full = recycle.empty((self.rows * self.window.count, self.window.window), torch.float32, keep=4)
            out = full[: audio.shape[0] * self.window.count]
        windows, labels, track_ids = make_windows(audio, labels, self.window, generator, track_ids, out,
                                                  roles.crop, roles.window_transforms)
        return finish_device_batch(windows, labels, track_ids, audio.shape[0], self.window, generator,
                                   roles.batch_transforms, self.features)

    def __iter__(self):
        staged, index = None, self.start_index
        for batch in self.host_batches:
            nxt = self._to_device(batch)
            if staged is not None:
                yield self._finish(staged, index)
                index += 1
            staged = nxt
        if staged is not None:
            yield self._finish(staged, index)
