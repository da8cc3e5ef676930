"""`fmashard train` and `fmashard evaluate`: thin wrappers over fmashard.train / fmashard.train.evaluate.

Their options are the fields of `TrainConfig` and `EvaluateConfig` (`fmashard.cli.options`): a new option
is a new field.  Under `torchrun --nproc-per-node N -m fmashard train ...` the same command trains with DDP."""
import os

import typer

from fmashard.cli import app
from fmashard.cli.options import config_command
from fmashard.train.config import EvaluateConfig, TrainConfig


@config_command(app, "train", TrainConfig)
def train(config: TrainConfig) -> None:
    """Train a genre classifier on the shards: one optimizer step per batch of tracks.

    Default recipe: AdamW (weight decay 0.05), linear warm-up over 5% of the steps then cosine, random crops,
    gain and polarity augmentations, BatchNorm recalibrated on 8 batches before each validation.  The notebook's
    recipe: --optimizer adam --lr-schedule none --augment none --no-random-crop --precise-bn 0.

    best.pt: the epoch with the highest validation track accuracy by mean logits averaged over it and the 2
    epochs before it (fewer at the start); a tie goes to the lower validation loss.  A build without validation
    tracks trains with a note: last.pt only.
    """
    from fmashard.train import train as run_training

    _note_workers(config)
    result = run_training(config)  # prints one line per epoch and the summary (rank 0)
    if result.interrupted:
        raise typer.Exit(130)


@config_command(app, "evaluate", EvaluateConfig)
def evaluate(config: EvaluateConfig) -> None:
    """Loss, window accuracy, track accuracy (majority vote, mean logits) and a confusion matrix (JSON, PNG)."""
    from fmashard.train import evaluate_checkpoint

    _note_workers(config)
    report = evaluate_checkpoint(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(report.summary())
        print("wrote " + ", ".join(report.files.values()))


def _note_workers(config) -> None:
    """`--workers` without per-sample CPU work to spread: say once what they are for (stdout, rank 0)."""
    if config.workers and not config.check_crc and os.environ.get("RANK", "0") == "0":
        from fmashard.data.loader import WORKERS_NOTE

        print("note: " + WORKERS_NOTE.format(n=config.workers), flush=True)
