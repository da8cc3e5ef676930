"""SoundNet1D and SoundNet1DLarge from the reference notebook: plain 1-D conv stacks on raw waveforms.

Layer names and `nn.Sequential` indices are the notebook's, so its state dicts load unchanged whenever
the classifier sizes agree.
"""
from __future__ import annotations

import torch
from torch import nn

from fmashard.models.shapes import check_arguments, check_input, output_length


class SoundNet1D(nn.Module):
    """The notebook's SoundNet1D: (N, 1, window_samples) -> (N, num_classes) logits.

    As in the notebook, only the first conv is bias-free, and conv4 feeds conv5 with no BatchNorm or
    activation between them.  The classifier's input is 1401 x the final length: 1401 for 56,798 to
    155,101 samples (110,250 included); the notebook's 2802 (length 2) holds for 155,102 to 253,405
    samples, e.g. 10-second windows of 220,500.
    """

    features = "wave"   # the input it takes: raw windows (fmashard.data.features)

    def __init__(self, num_classes: int, window_samples: int = 110_250):
        super().__init__()
        check_arguments("SoundNet1D", num_classes, window_samples)
        self.window_samples = window_samples
        self.group1 = nn.Sequential(
            nn.Conv1d(in_channels=1, out_channels=32, kernel_size=64, stride=2, padding=32, bias=False),
            nn.BatchNorm1d(32),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=8, stride=8, padding=0),
            nn.Conv1d(in_channels=32, out_channels=64, kernel_size=32, stride=2, padding=16),
            nn.BatchNorm1d(64),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=8, stride=8, padding=0),
        )
        self.group2 = nn.Sequential(
            nn.Conv1d(in_channels=64, out_channels=128, kernel_size=16, stride=2, padding=8),
            nn.BatchNorm1d(128),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=8, stride=8, padding=0),
            nn.Conv1d(in_channels=128, out_channels=256, kernel_size=8, stride=2, padding=4),
            nn.Conv1d(in_channels=256, out_channels=1401, kernel_size=16, stride=12, padding=4),
        )
        length = output_length((self.group1, self.group2), window_samples, "SoundNet1D")
        self.fc = nn.Linear(1401 * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SoundNet1D", x, self.window_samples)
        x = self.group2(self.group1(x))
        return self.fc(x.flatten(1))


class SoundNet1DLarge(nn.Module):
    """The notebook's SoundNet1DLarge: (N, 1, window_samples) -> (N, num_classes) logits.

    Its pools have stride 1, so the length shrinks only through the stride-2 convs, and two parallel
    heads (conv81: 1000 channels, conv82: 401) are concatenated to 1401 channels before flattening.
    The notebook hard-codes 1401 classifier inputs, which needs a final length of 1 (windows of 908 to
    1,163 samples); for 110,250 samples the length is 428, so the classifier here takes
    1401 x 428 = 599,628 inputs.
    """

    features = "wave"   # the input it takes: raw windows (fmashard.data.features)

    def __init__(self, num_classes: int, window_samples: int = 110_250):
        super().__init__()
        check_arguments("SoundNet1DLarge", num_classes, window_samples)
        self.window_samples = window_samples
        self.group1 = nn.Sequential(
            nn.Conv1d(in_channels=1, out_channels=16, kernel_size=64, stride=2, padding=32),
            nn.BatchNorm1d(16),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=8, stride=1, padding=0),
            nn.Conv1d(in_channels=16, out_channels=32, kernel_size=32, stride=2, padding=16),
            nn.BatchNorm1d(32),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=8, stride=1, padding=0),
        )
        self.group2 = nn.Sequential(
            nn.Conv1d(in_channels=32, out_channels=64, kernel_size=16, stride=2, padding=8),
            nn.BatchNorm1d(64),
            nn.ReLU(True),
            nn.Conv1d(in_channels=64, out_channels=128, kernel_size=8, stride=2, padding=4),
            nn.BatchNorm1d(128),
            nn.ReLU(True),
            nn.Conv1d(in_channels=128, out_channels=256, kernel_size=4, stride=2, padding=2),
            nn.BatchNorm1d(256),
            nn.ReLU(True),
            nn.MaxPool1d(kernel_size=4, stride=1, padding=0),
            nn.Conv1d(in_channels=256, out_channels=512, kernel_size=4, stride=2, padding=2),
            nn.BatchNorm1d(512),
            nn.ReLU(True),
            nn.Conv1d(in_channels=512, out_channels=1024, kernel_size=4, stride=2, padding=2),
            nn.BatchNorm1d(1024),
            nn.ReLU(True),
        )
        self.conv81 = nn.Conv1d(in_channels=1024, out_channels=1000, kernel_size=8, stride=2, padding=0)
        self.conv82 = nn.Conv1d(in_channels=1024, out_channels=401, kernel_size=8, stride=2, padding=0)
        # conv82 has conv81's geometry, so conv81 alone sets the length of the concatenation.
        length = output_length((self.group1, self.group2, self.conv81), window_samples, "SoundNet1DLarge")
        self.fc = nn.Linear((1000 + 401) * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("SoundNet1DLarge", x, self.window_samples)
        x = self.group2(self.group1(x))
        x = torch.cat((self.conv81(x), self.conv82(x)), dim=1)
        return self.fc(x.flatten(1))
