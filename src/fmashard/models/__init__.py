"""The classifiers, by name: `build_model("resnet1d", num_classes)`.

Every model maps the features of (N) windows of `window_samples` samples (default 110,250: 5 s at
22,050 Hz) to (N, num_classes) logits, and names those features in its class attribute `features`
(a name of `fmashard.data.features.FEATURES`; `model_features(name)`): the notebook's waveform models take
`wave`, (N, 1, window_samples), their classifier's input size derived from `window_samples`; `melcnn` takes
`logmel`, (N, 1, 128, 1 + window_samples // 512).
"""
from __future__ import annotations

from torch import nn

from fmashard.errors import UserError
from fmashard.models.melcnn import MelCNN
from fmashard.models.resnet1d import Res1DLayer, ResNet1D
from fmashard.models.soundnet import SoundNet1D, SoundNet1DLarge

__all__ = ["MODELS", "MelCNN", "Res1DLayer", "ResNet1D", "SoundNet1D", "SoundNet1DLarge", "build_model",
           "count_parameters", "model_features"]

MODELS: dict[str, type[nn.Module]] = {
    "resnet1d": ResNet1D,
    "soundnet": SoundNet1D,
    "soundnet-large": SoundNet1DLarge,
    "melcnn": MelCNN,
}


def _model_class(name: str) -> type[nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def model_features(name: str) -> str:
    """The features the model registered as `name` takes: "wave" or "logmel" (fmashard.data.features)."""
    return _model_class(name).features


def build_model(name: str, num_classes: int, window_samples: int = 110_250) -> nn.Module:
    """The model registered as `name`; UserError for an unknown name or an unusable size."""
    model_class = _model_class(name)
    try:
        return model_class(num_classes, window_samples)
    except ValueError as exc:  # window too short, bad num_classes: something the user can fix
        raise UserError(str(exc)) from exc


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
