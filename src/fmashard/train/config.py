"""`TrainConfig`: the settings of a training run, validated at construction, and what follows from them
(the window spec, and the device transforms of the training batches)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from fmashard.data.features import FEATURES
from fmashard.data.transforms import RandomCrop, parse_augment
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from fmashard.models import MODELS, model_features
from fmashard.train.guard import NONFINITE_LIMIT
from fmashard.train.optim import OPTIMIZERS, SCHEDULES
from fmashard.train.precision import AMP_DTYPES

# The notebook's recipe (plain Adam, constant rate, no augmentation, no BatchNorm recalibration), which the
# defaults replace: `TrainConfig(..., **NOTEBOOK_RECIPE)` or the flags of `fmashard train --help`.
NOTEBOOK_RECIPE = dict(optimizer="adam", lr_schedule="none", augment="none", random_crop=False, precise_bn=0)
DEFAULT_AUGMENT = "gain=6,polarity"   # mixup is one term away (benchmarks/README "Training recipe": why not on)


class ConfigError(UserError, ValueError):
    """A bad training argument: a ValueError for library callers, a one-line exit 2 in the CLI."""


@dataclass(frozen=True)
class TrainConfig:
    shards: str                      # manifest / folder / URL; splits "training" and "validation" are used
    out: str                         # RUN_DIR
    model: str = "resnet1d"          # resnet1d | soundnet | soundnet-large | melcnn
    epochs: int = 10
    batch_size: int = 8              # tracks per optimizer step (all their windows in one step)
    lr: float = 1e-3                 # the peak learning rate (the notebook's Adam rate)
    optimizer: str = "adamw"         # adamw | adam (fmashard.train.optim.OPTIMIZERS)
    weight_decay: float | None = None  # None: adamw 0.05, adam 0; never on BatchNorm weights or biases
    lr_schedule: str = "cosine"      # cosine (linear warm-up, then cosine to 0) | onecycle | none
    warmup: float = 0.05             # warm-up: a fraction of the run's steps in [0, 1), or a step count >= 1
    amp: bool = False
    amp_dtype: str = "auto"          # auto (bf16 where supported, else fp16) | bf16 | fp16
    device: str = "auto"
    workers: int = 0                 # DataLoader worker processes (0: read in this process)
    read_threads: int = 2            # threads reading records at once (per process)
    random_crop: bool = True         # training transform RandomCrop (see transforms()); False: fixed hops
    augment: str = DEFAULT_AUGMENT   # training augmentations on the device ("none": off)
    features: str | None = None      # wave | logmel; None: what the model takes (model_features)
    compile: bool = False
    seed: int = 0
    window_seconds: float = 5.0
    windows: int = 7
    overlap: float = 0.25
    shuffle_buffer: int = 64
    precise_bn: int = 8              # re-estimate BatchNorm statistics on this many training batches before
                                     # each validation (8 forward passes: cheap; 0: off)
    max_steps: int | None = None     # stop after this many optimizer steps (counted over the whole run)
    checkpoint_every: int = 200      # steps between mid-epoch last.pt saves (0: epoch ends only)
    on_error: str = "raise"
    max_nonfinite_steps: int = NONFINITE_LIMIT  # steps in a row with a non-finite loss/gradients before a stop
    check_crc: bool = False          # check each sample's audio against the build's crc32 (LoaderConfig)
    endpoint_url: str | None = None  # sets AWS_ENDPOINT_URL
    resume: bool = False
    log_batches: bool = False        # RUN_DIR/steps.jsonl: the track ids of every step
    progress: bool | None = None     # rich bar; None: when stdout is a terminal and CI is unset
    verbose: bool = True             # print one line per epoch and a summary

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "shards", str(self.shards))
        set_(self, "out", str(self.out))
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("epochs", "batch_size", "windows", "shuffle_buffer", "read_threads", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "checkpoint_every", "seed", "precise_bn"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule: must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise ConfigError(f"weight_decay: must be in [0, 1), got {self.weight_decay}")
        if self.warmup < 0 or (self.warmup >= 1 and not float(self.warmup).is_integer()):
            raise ConfigError(f"warmup: a fraction in [0, 1) or a whole number of steps, got {self.warmup}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp_dtype: must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if not self.window_seconds > 0:
            raise ConfigError(f"window_seconds: must be > 0, got {self.window_seconds}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap: must be in [0, 1), got {self.overlap}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: must be >= 1, got {self.max_steps}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error: must be raise or skip, got {self.on_error!r}")
        if not self.out:
            raise ConfigError("out: a run folder is required")
        parse_augment(self.augment)   # a bad --augment is one line before anything starts
        expected = model_features(self.model)
        if self.features is None:
            set_(self, "features", expected)
        elif self.features not in FEATURES:
            raise ConfigError(f"features: must be one of {', '.join(FEATURES)}, got {self.features!r}")
        elif self.features != expected:
            raise ConfigError(f"features: model {self.model} takes {expected} input, not {self.features}")
        if self.batch_size * self.windows < 2:
            raise ConfigError("batch_size: one track of one window per step cannot train BatchNorm; "
                              "use --batch-size >= 2 or --windows >= 2")

    def window_spec(self, sample_rate: int) -> WindowSpec:
        return WindowSpec.seconds(self.window_seconds, sample_rate, overlap=self.overlap, count=self.windows)

    def transforms(self) -> list:
        """The device transforms of the training batches, in order (validation and evaluation use none)."""
        transforms = []
        if self.random_crop:
            transforms.append(RandomCrop())
        return transforms + parse_augment(self.augment)

    def as_dict(self) -> dict:
        return asdict(self)
