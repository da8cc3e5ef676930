"""Feature stage: float windows -> what the model takes, on the device, batched over all windows of a batch.

    features = make_features("logmel", sample_rate=22050)            # FEATURES: "wave" | "logmel"
    DeviceFeeder(loader, device, window, transforms=..., features=features)   # training and evaluation alike
    feature_shape("logmel", 110_250)  ->  (1, 128, 216)               # what one window becomes

It runs after the transforms (augmentations and mixup: they act on the waveform), in float32 whatever
autocast is on, and never augments: evaluation passes the same features and no transforms.  A model
names the features it takes (`features = "logmel"` on its class: `fmashard.models.model_features`).
"""
from __future__ import annotations

import torch
from torch import nn

from fmashard.errors import UserError


class Waveform(nn.Module):
    """`wave`: the windows themselves, (N, 1, L)."""

    name = "wave"

    def __init__(self, sample_rate: int = 22050):
        super().__init__()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return windows

    def output_shape(self, window: int) -> tuple[int, ...]:
        return (1, window)


class LogMel(nn.Module):
    """`logmel`: (N, 1, L) windows -> (N, 1, n_mels, 1 + L // hop_length) log-mel power spectrograms in dB.

    `torchaudio.transforms.MelSpectrogram` with librosa's defaults for 22,050 Hz music: n_fft 2048 (93 ms:
    enough frequency resolution, 10.8 Hz a bin, for the low notes), hop 512 (23 ms: 43 frames a second, 216
    for a 5-s window), 128 mel bands on the Slaney mel scale with Slaney (area) normalisation, power 2; a
    centred STFT (reflect padding).  Then `AmplitudeToDB("power", top_db=None)`: 10 log10(max(x, 1e-10)).
    dB rather than log(x + eps): the same log up to a factor, with its floor (-100 dB) at a stated place
    (silence, such as the zero-padded tails of short tracks, lands there instead of at an eps of our
    choosing).  No top_db clamp: torchaudio clamps relative to the loudest bin of each spectrogram (or of
    the whole tensor, depending on its dimensions), which would make a window's features depend on its
    peak and on how the batch is shaped, and would undo the gain augmentation; the compression here is
    elementwise, so a batch of windows gives exactly what each window gives alone.
    """

    name = "logmel"

    def __init__(self, sample_rate: int = 22050, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128):
        super().__init__()
        import torchaudio  # noqa: PLC0415 - only the log-mel stage needs torchaudio

        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0,
            norm="slaney", mel_scale="slaney")
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=None)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(windows.device.type, enabled=False):
            return self.to_db(self.mel(windows.float()))

    def output_shape(self, window: int) -> tuple[int, ...]:
        """(1, n_mels, frames) for windows of `window` samples; ValueError when the centred STFT cannot
        pad them (reflect padding needs more than n_fft / 2 samples)."""
        if window <= self.n_fft // 2:
            raise ValueError(f"log-mel features need windows of more than {self.n_fft // 2} samples "
                             f"(n_fft {self.n_fft} / 2), got {window}")
        return (1, self.n_mels, 1 + window // self.hop_length)


FEATURES: dict[str, type[nn.Module]] = {"wave": Waveform, "logmel": LogMel}


def make_features(name: str, sample_rate: int = 22050) -> nn.Module:
    """The feature stage registered as `name` (move it to the device with `.to(device)`, or let
    DeviceFeeder do it); UserError for an unknown name."""
    try:
        feature_class = FEATURES[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown features {name!r}; choose one of: {', '.join(FEATURES)}") from None
    return feature_class(sample_rate)


def feature_shape(name: str, window: int, sample_rate: int = 22050) -> tuple[int, ...]:
    """The shape one window of `window` samples becomes (without the batch dimension)."""
    return make_features(name, sample_rate).output_shape(window)
