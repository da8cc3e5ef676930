"""`TrainConfig`: the settings of a training run, validated at construction, and what follows from them
(the window spec, and the device transforms of the training batches); `EvaluateConfig`: those of an evaluation.

Each option is written once, as a field: its default, and its `--help` text in the field's metadata
(`fmashard.train.options.option`), from which `fmashard train` derives its typer options.  A new option
is one field here (plus its check in `__post_init__`, if it needs one).  The reading options (workers,
read threads, error policy, crc check, S3 endpoint) are `ReadOptions`', shared with `EvaluateConfig`.
Torch-free to import (the CLI starts with it); the checks import the registries they look names up in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from fmashard.train.options import NONFINITE_LIMIT, ConfigError, ReadOptions, check_at_least, option

if TYPE_CHECKING:
    from fmashard.data.transforms import DeviceTransforms
    from fmashard.data.windows import WindowSpec

__all__ = ["AUGMENT_SYNTAX", "DEFAULT_AUGMENT", "NOTEBOOK_FLAGS", "NOTEBOOK_RECIPE", "ConfigError", "EvaluateConfig",
           "TrainConfig"]

# The notebook's recipe (plain Adam, constant rate, no augmentation, no BatchNorm recalibration), which the
# defaults replace: `TrainConfig(..., **NOTEBOOK_RECIPE)` or the flags of `fmashard train --help`.
NOTEBOOK_RECIPE = dict(optimizer="adam", lr_schedule="none", augment="none", random_crop=False, precise_bn=0)
NOTEBOOK_FLAGS = "--optimizer adam --lr-schedule none --augment none --no-random-crop --precise-bn 0"  # test_optim
DEFAULT_AUGMENT = "gain=6,polarity"   # mixup is one term away (benchmarks/README "Training recipe": why not on)
AUGMENT_SYNTAX = "gain[=DB],polarity[=P],mixup[=ALPHA]"   # fmashard.data.transforms.AUGMENT_SYNTAX (test_cli_help)


@dataclass(frozen=True)
class TrainConfig(ReadOptions):
    shards: str = field(metadata=option("Manifest, build folder or URL (s3://, https://) of the shards.",
                                        "--shards"))
    out: str = field(metadata=option("RUN_DIR: config.json, metrics.jsonl, last.pt, best.pt.", "--out"))
    model: str = field(default="resnet1d", metadata=option(
        "resnet1d, soundnet, soundnet-large (waveforms) or melcnn (log-mel)."))
    epochs: int = field(default=10, metadata=option("Epochs over the training split."))
    batch_size: int = field(default=8, metadata=option(
        "Tracks per optimizer step (all their windows go in one step)."))
    lr: float = field(default=1e-3, metadata=option(
        "Peak learning rate (the schedule's top; constant with --lr-schedule none)."))
    optimizer: str = field(default="adamw", metadata=option(
        "adamw (decoupled weight decay) or adam (the notebook's plain Adam)."))
    weight_decay: float | None = field(default=None, metadata=option(
        "Weight decay; default 0.05 with adamw, 0 with adam (with adam: an L2 penalty). Never on BatchNorm "
        "weights or biases."))
    lr_schedule: str = field(default="cosine", metadata=option(
        "cosine (linear warm-up, then a half cosine to 0 at the last step), onecycle (torch's OneCycleLR: lr/25 "
        "up, lr/25e4 at the end) or none. It spans --epochs (--max-steps only stops early) and is set from the "
        "global step, so --resume follows it exactly."))
    warmup: float = field(default=0.05, metadata=option(
        "Warm-up of the schedule: a fraction of the run's steps in [0, 1), or a whole number >= 1 of steps."))
    amp: bool = field(default=False, metadata=option("Mixed precision (torch.autocast).", "--amp"))
    amp_dtype: str = field(default="auto", metadata=option(
        "auto (bf16 where supported, else fp16 + GradScaler), bf16, fp16."))
    device: str = field(default="auto", metadata=option("auto, cuda or cpu."))
    random_crop: bool = field(default=True, metadata=option(
        "Random window starts in training (evaluation: fixed hops).", "--random-crop/--no-random-crop"))
    augment: str = field(default=DEFAULT_AUGMENT, metadata=option(
        f"Training augmentations on the device, comma-separated: {AUGMENT_SYNTAX} (default {DEFAULT_AUGMENT}: "
        "random gain of +-6 dB and a random sign; add mixup=0.2 for mixup with Beta(0.2, 0.2) and mixed labels; "
        "none: off); evaluation never augments."))
    features: str | None = field(default=None, metadata=option(
        "wave or logmel (128-band log-mel spectrogram computed on the device); default: what --model takes."))
    compile: bool = field(default=False, metadata=option("torch.compile the model.", "--compile"))
    seed: int = field(default=0, metadata=option("Seed of the model init, the shuffle and the crops."))
    window_seconds: float = field(default=5.0, metadata=option("Window length in seconds."))
    windows: int = field(default=7, metadata=option("Windows per track."))
    overlap: float = field(default=0.25, metadata=option("Overlap of consecutive windows, in [0, 1)."))
    shuffle_buffer: int = field(default=64, metadata=option("Samples in the loader's shuffle buffer."))
    precise_bn: int = field(default=8, metadata=option(
        "Re-estimate BatchNorm statistics on N training batches before each validation (N forward passes; "
        "0: off)."))
    max_steps: int | None = field(default=None, metadata=option(
        "Stop after this many optimizer steps (whole run)."))
    checkpoint_every: int = field(default=200, metadata=option(
        "Steps between mid-epoch last.pt saves (0: epoch ends only)."))
    max_nonfinite_steps: int = field(default=NONFINITE_LIMIT, metadata=option(
        "A step whose loss or gradients are not finite is skipped (weights and optimizer unchanged) and counted; "
        "this many in a row stop the run with one line and exit 2."))
    resume: bool = field(default=False, metadata=option("Continue the run in --out from its last.pt.", "--resume"))
    log_batches: bool = field(default=False, metadata=option(
        "Write RUN_DIR/steps.jsonl (track ids per step).", "--log-batches"))
    progress: bool | None = None     # rich bar; None: when stdout is a terminal and CI is unset (not a CLI option)
    verbose: bool = True             # print one line per epoch and a summary (not a CLI option)

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        set_(self, "shards", str(self.shards))
        set_(self, "out", str(self.out))
        self._check_names()
        check_at_least(self, 1, "epochs", "batch_size", "windows", "shuffle_buffer", "max_nonfinite_steps")
        check_at_least(self, 0, "checkpoint_every", "seed", "precise_bn")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay: must be in [0, 1), got {self.weight_decay}")
        if self.warmup < 0 or (self.warmup >= 1 and not float(self.warmup).is_integer()):
            raise ConfigError(f"warmup: a fraction in [0, 1) or a whole number of steps, got {self.warmup}")
        if not self.window_seconds > 0:
            raise ConfigError(f"window_seconds: must be > 0, got {self.window_seconds}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap: must be in [0, 1), got {self.overlap}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: must be >= 1, got {self.max_steps}")
        if not self.out:
            raise ConfigError("out: a run folder is required")
        if self.batch_size * self.windows < 2:
            raise ConfigError("batch_size: one track of one window per step cannot train BatchNorm; "
                              "use --batch-size >= 2 or --windows >= 2")

    def _check_names(self) -> None:
        """The options that name something of a registry: the model, optimizer, schedule, precision,
        augmentations and features (and `features` filled in from the model)."""
        from fmashard.data.features import FEATURES  # noqa: PLC0415 - the registries import torch
        from fmashard.data.transforms import parse_augment  # noqa: PLC0415
        from fmashard.models import MODELS, model_features  # noqa: PLC0415
        from fmashard.train.optim import OPTIMIZERS, SCHEDULES  # noqa: PLC0415
        from fmashard.train.precision import AMP_DTYPES  # noqa: PLC0415

        if self.model not in MODELS:
            raise ConfigError(f"model: unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name, choices in (("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES), ("amp_dtype", AMP_DTYPES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        parse_augment(self.augment)   # a bad --augment is one line before anything starts
        expected = model_features(self.model)
        if self.features is None:
            object.__setattr__(self, "features", expected)
        elif self.features not in FEATURES:
            raise ConfigError(f"features: must be one of {', '.join(FEATURES)}, got {self.features!r}")
        elif self.features != expected:
            raise ConfigError(f"features: model {self.model} takes {expected} input, not {self.features}")

    def window_spec(self, sample_rate: int) -> WindowSpec:
        from fmashard.data.windows import WindowSpec  # noqa: PLC0415

        return WindowSpec.seconds(self.window_seconds, sample_rate, overlap=self.overlap, count=self.windows)

    def transforms(self) -> DeviceTransforms:
        """The device transforms of the training batches, by role (validation and evaluation use none): the
        crop of --random-crop, and the --augment ones in the roles `parse_augment` gives them."""
        from fmashard.data.transforms import RandomCrop, parse_augment  # noqa: PLC0415

        return replace(parse_augment(self.augment), crop=RandomCrop() if self.random_crop else None)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvaluateConfig(ReadOptions):
    """`fmashard evaluate`'s settings (`fmashard.train.evaluate.evaluate_checkpoint`)."""

    checkpoint: str = field(metadata=option("A last.pt or best.pt of `fmashard train`.", "--checkpoint"))
    shards: str = field(metadata=option("Manifest, build folder or URL of the shards.", "--shards"))
    split: str = field(default="test", metadata=option("Split to evaluate: test, validation or training."))
    out: str | None = field(default=None, metadata=option(
        "Folder for the metrics and confusion matrix (default: the checkpoint's folder).", "--out"))
    batch_size: int = field(default=8, metadata=option("Tracks per forward pass."))
    device: str = field(default="auto", metadata=option("auto, cuda or cpu."))
    amp: bool | None = field(default=None, metadata=option("Mixed precision (default: as trained).",
                                                           "--amp/--no-amp"))

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "batch_size")
