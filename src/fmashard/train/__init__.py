"""Training: config, loop, precision, evaluation, metrics, checkpoints, the run folder, distributed helpers.

    from fmashard.train import TrainConfig, train
    result = train(TrainConfig(shards="out/", out="runs/a", epochs=3))

The names load on first use (PEP 562), so the configs (`fmashard.train.config`, torch-free) can be imported
by the CLI's start without torch.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "ConfigError": "fmashard.train.options",
    "EvaluateConfig": "fmashard.train.config",
    "TrainConfig": "fmashard.train.config",
    "TrainResult": "fmashard.train.state",
    "evaluate_checkpoint": "fmashard.train.evaluate",
    "train": "fmashard.train.loop",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'fmashard.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
