"""Training: config, loop, precision, evaluation, metrics, checkpoints, the run folder, distributed helpers.

    from fmashard.train import TrainConfig, train
    result = train(TrainConfig(shards="out/", out="runs/a", epochs=3))
"""
from fmashard.train.config import ConfigError, TrainConfig
from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint
from fmashard.train.loop import TrainResult, train

__all__ = ["ConfigError", "EvaluateConfig", "TrainConfig", "TrainResult", "evaluate_checkpoint", "train"]
