"""Training: config, loop, evaluation, checkpoints, distributed helpers."""
