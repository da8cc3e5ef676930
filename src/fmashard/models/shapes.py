"""Lengths through the models' 1-D conv/pool stacks, read from the layers themselves.

The classifier's input size and the shortest usable window both follow from the (kernel, stride, padding)
of every layer on the main path, so they are computed here instead of being hard-coded.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

# Layers that keep the length: they are skipped when walking the main path.
_LENGTH_PRESERVING = (nn.BatchNorm1d, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)


def _single(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def layer_geometry(module: nn.Module) -> Iterator[tuple[int, int, int]]:
    """(kernel, stride, padding) of each length-changing layer on `module`'s main path, in order.

    A block with a parallel branch (a residual shortcut) lists its main path in `length_path()`.
    """
    if isinstance(module, (nn.Conv1d, nn.MaxPool1d)):
        if _single(module.dilation) != 1 or getattr(module, "ceil_mode", False):
            raise TypeError(f"{module}: dilation and ceil_mode are not supported")
        yield _single(module.kernel_size), _single(module.stride), _single(module.padding)
    elif hasattr(module, "length_path"):
        for child in module.length_path():
            yield from layer_geometry(child)
    elif isinstance(module, nn.Sequential):
        for child in module:
            yield from layer_geometry(child)
    elif not isinstance(module, _LENGTH_PRESERVING):
        raise TypeError(f"cannot tell how {type(module).__name__} changes the length")


def min_window(stages: Sequence[nn.Module]) -> int:
    """The shortest input for which every layer of `stages` yields at least one output step."""
    needed = 1
    for kernel, stride, padding in reversed(list(_geometry(stages))):
        needed = max(1, (needed - 1) * stride + kernel - 2 * padding)
    return needed


def output_length(stages: Sequence[nn.Module], window_samples: int, model_name: str) -> int:
    """Length after `stages` for a `window_samples` input; ValueError naming the minimum if too short."""
    if window_samples < (shortest := min_window(stages)):
        raise ValueError(
            f"{model_name} needs windows of at least {shortest:,} samples (the length its convolutions "
            f"and pools consume), got window_samples={window_samples:,}"
        )
    length = window_samples
    for kernel, stride, padding in _geometry(stages):
        length = (length + 2 * padding - kernel) // stride + 1
    return length


def _geometry(stages: Sequence[nn.Module]) -> Iterator[tuple[int, int, int]]:
    for stage in stages:
        yield from layer_geometry(stage)


def check_arguments(model_name: str, num_classes: int, window_samples: int) -> None:
    """ValueError naming the argument unless both are positive integers."""
    for name, value in (("num_classes", num_classes), ("window_samples", window_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{model_name}: {name} must be a positive integer, got {value!r}")


def check_input(model_name: str, x: torch.Tensor, window_samples: int) -> None:
    """ValueError unless `x` is (N, 1, window_samples): a clearer message than the classifier's."""
    if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != window_samples:
        raise ValueError(f"{model_name} expects input (N, 1, {window_samples}), got {tuple(x.shape)}")
