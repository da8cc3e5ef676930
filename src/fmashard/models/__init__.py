"""The notebook's waveform classifiers, by name: `build_model("resnet1d", num_classes)`.

Every model maps (N, 1, window_samples) float waveforms to (N, num_classes) logits; its classifier's
input size is derived from `window_samples` (default 110,250: 5 s at 22,050 Hz).
"""
from __future__ import annotations

from torch import nn

from fmashard.errors import UserError
from fmashard.models.resnet1d import Res1DLayer, ResNet1D
from fmashard.models.soundnet import SoundNet1D, SoundNet1DLarge

__all__ = ["MODELS", "Res1DLayer", "ResNet1D", "SoundNet1D", "SoundNet1DLarge", "build_model",
           "count_parameters"]

MODELS: dict[str, type[nn.Module]] = {
    "resnet1d": ResNet1D,
    "soundnet": SoundNet1D,
    "soundnet-large": SoundNet1DLarge,
}


def build_model(name: str, num_classes: int, window_samples: int = 110_250) -> nn.Module:
    """The model registered as `name`; UserError for an unknown name or an unusable size."""
    try:
        model_class = MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    try:
        return model_class(num_classes, window_samples)
    except ValueError as exc:  # window too short, bad num_classes: something the user can fix
        raise UserError(str(exc)) from exc


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
