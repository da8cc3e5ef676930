"""ResNet1D from the reference notebook: residual 1-D conv blocks on raw waveforms."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmashard.models.shapes import check_arguments, check_input, output_length


class Res1DLayer(nn.Module):
    """conv-BN-leaky_relu-conv-BN, plus a bias-free 1x1 projection shortcut, then leaky_relu.

    Both convs and the projection use `stride`, so lengths only match for stride 1 (the only stride the
    notebook uses).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, stride, padding)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.projection = nn.Conv1d(
            in_channels, out_channels, kernel_size=1, stride=stride, padding=0, bias=False
        )

    def length_path(self) -> tuple[nn.Module, ...]:
        """The layers that set the output length (the shortcut runs beside them)."""
        return self.conv1, self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.projection(x)
        return F.leaky_relu(out)


class ResNet1D(nn.Module):
    """The notebook's ResNet1D: (N, 1, window_samples) waveforms -> (N, num_classes) logits.

    The notebook builds a `layer3` (four 256-channel blocks) but its forward skips it; this class keeps
    that forward and does not build the unused layer3, so parameter counts and state dicts leave it out
    (load a notebook checkpoint with `strict=False`).  The classifier's input size is derived from
    `window_samples`: 512 x 2 = 1024 for 110,250 samples, as the notebook hard-codes.
    """

    features = "wave"   # the input it takes: raw windows (fmashard.data.features)

    def __init__(self, num_classes: int, window_samples: int = 110_250):
        super().__init__()
        check_arguments("ResNet1D", num_classes, window_samples)
        self.window_samples = window_samples
        self.conv1 = nn.Conv1d(
            in_channels=1, out_channels=128, kernel_size=3, stride=3, padding=3, bias=False
        )
        self.layer1 = nn.Sequential(
            Res1DLayer(128, 128, kernel_size=3, stride=1, padding=1),
            nn.MaxPool1d(kernel_size=9, stride=9, padding=1),
            Res1DLayer(128, 128, kernel_size=3, stride=1, padding=1),
            nn.MaxPool1d(kernel_size=9, stride=9, padding=1),
        )
        self.layer2 = nn.Sequential(
            Res1DLayer(128, 256, kernel_size=3, stride=1, padding=1),
            nn.MaxPool1d(kernel_size=9, stride=9, padding=1),
            Res1DLayer(256, 256, kernel_size=3, stride=1, padding=1),
            nn.MaxPool1d(kernel_size=9, stride=9, padding=1),
        )
        self.layer4 = nn.Sequential(
            Res1DLayer(256, 512, kernel_size=3, stride=1, padding=1),
            nn.MaxPool1d(kernel_size=3, stride=3, padding=1),
            nn.Conv1d(512, 512, kernel_size=1, stride=1, padding=0),
        )
        length = output_length(self._stages(), window_samples, "ResNet1D")
        self.fc = nn.Linear(512 * length, num_classes)

    def _stages(self) -> tuple[nn.Module, ...]:
        return self.conv1, self.layer1, self.layer2, self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("ResNet1D", x, self.window_samples)
        for stage in self._stages():
            x = stage(x)
        return self.fc(x.flatten(1))
