"""MelCNN: a small 2-D CNN on log-mel spectrograms, after Choi et al. (2016, "Automatic tagging using deep
convolutional neural networks"): a frequency-wise BatchNorm of the input, four blocks of
conv3x3-BN-ReLU-maxpool(2x2), then global average pooling and one linear layer.

Its input is what the `logmel` features (`fmashard.data.features.LogMel`) make of a window: (N, 1, n_mels,
frames) with frames = 1 + window_samples // hop_length (a centred STFT), so the input size follows from the
window length as for the waveform models; the classifier takes the last block's channels whatever the
window, and the shortest window is the one that leaves one frame after the four pools.  The model declares
the features it takes with `features = "logmel"` (`fmashard.models.model_features`).
"""
from __future__ import annotations

import torch
from torch import nn

from fmashard.models.shapes import check_arguments

CHANNELS = (16, 32, 64, 128)   # small: about 0.1 M parameters; a step costs a third of a SoundNet step on the CPU
POOL = 2


class MelCNN(nn.Module):
    """(N, 1, n_mels, frames) log-mel spectrograms -> (N, num_classes) logits."""

    features = "logmel"

    def __init__(self, num_classes: int, window_samples: int = 110_250, n_mels: int = 128, hop_length: int = 512):
        super().__init__()
        check_arguments("MelCNN", num_classes, window_samples)
        self.window_samples, self.n_mels = window_samples, n_mels
        self.frames = 1 + window_samples // hop_length
        shrink = POOL ** len(CHANNELS)
        if self.frames < shrink or n_mels < shrink:
            raise ValueError(f"MelCNN needs at least {shrink} log-mel frames and bands (its {len(CHANNELS)} pools "
                             f"halve both), i.e. windows of at least {(shrink - 1) * hop_length:,} samples, "
                             f"got window_samples={window_samples:,} ({self.frames} frames, {n_mels} bands)")
        self.input_bn = nn.BatchNorm2d(n_mels)   # frequency-wise: each mel band normalised on its own
        blocks, channels = [], 1
        for out_channels in CHANNELS:
            blocks += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.MaxPool2d(POOL)]
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One window's input: (1, n_mels, frames), what `LogMel().output_shape(window_samples)` gives."""
        return (1, self.n_mels, self.frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"MelCNN expects log-mel input (N, {', '.join(map(str, self.input_shape))}), got "
                             f"{tuple(x.shape)} (train it with the 'logmel' features)")
        x = self.input_bn(x.transpose(1, 2)).transpose(1, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))
