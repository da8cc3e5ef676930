"""Training: config, loop, precision, evaluation, metrics, checkpoints, the run folder, distributed helpers.

    from fmashard.train import TrainConfig, train
    result = train(TrainConfig(shards="out/", out="runs/a", epochs=3))

The names load on first use (PEP 562), so the configs (`fmashard.train.config`, torch-free) can be imported
by the CLI's start without torch.
"""
from __future__ import annotations

from fmashard.lazy import lazy_names

_HOMES = {"ConfigError": "fmashard.train.options", "TrainResult": "fmashard.train.state",   # name -> its module
          "EvaluateConfig": "fmashard.train.config", "TrainConfig": "fmashard.train.config",
          "evaluate_checkpoint": "fmashard.train.evaluate", "train": "fmashard.train.loop"}
__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
