"""Options written once: a config's dataclass field holds the option's default, and its metadata (`option`)
the help text and flags `fmashard.cli.options` derives the typer option from.  `ReadOptions`, the options of
reading the shards, is the one home shared by `TrainConfig` and `EvaluateConfig`; `loader_config` builds
every `LoaderConfig` of a training run or an evaluation from it.  Torch-free: the CLI imports it to start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmashard.errors import ON_ERROR_CHOICES, UserError

if TYPE_CHECKING:
    from fmashard.data.loader import LoaderConfig

READ_PANEL = "Reading the shards"
NONFINITE_LIMIT = 10   # consecutive skipped steps before training stops (fmashard.train.guard: why 10)


class ConfigError(UserError, ValueError):
    """A bad training argument: a ValueError for library callers, a one-line exit 2 in the CLI."""


def option(help: str, *flags: str, panel: str | None = None) -> dict:
    """A field's metadata: its `--help` text, its flags (default: `--field-name`) and help panel."""
    return {"help": help, "flags": flags, "panel": panel}


def check_at_least(config, minimum: int, *names: str) -> None:
    """ConfigError naming the first of `names` whose value is below `minimum`."""
    for name in names:
        if getattr(config, name) < minimum:
            raise ConfigError(f"{name}: must be >= {minimum}, got {getattr(config, name)}")


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    workers: int = field(default=0, metadata=option(
        "DataLoader worker processes (0: read in this process). For CPU-heavy per-sample work (--check-crc, host "
        "codecs): it leaves the training process (crc: 1.0 -> 0.2 CPU ms/track there); I/O alone needs none.",
        panel=READ_PANEL))
    read_threads: int = field(default=2, metadata=option(
        "Threads reading records at once, per process: the I/O (2 reach ~90% of a raw read locally; more for "
        "object storage).", panel=READ_PANEL))
    on_error: str = field(default="raise", metadata=option(
        f"{' or '.join(ON_ERROR_CHOICES)} corrupt samples.", panel=READ_PANEL))
    check_crc: bool = field(default=False, metadata=option(
        "Check each sample's audio against the crc32 the build recorded (untrusted or flaky storage); a mismatch "
        "is a corrupt sample.", "--check-crc", panel=READ_PANEL))
    endpoint_url: str | None = field(default=None, metadata=option(
        "S3 endpoint (sets AWS_ENDPOINT_URL).", panel=READ_PANEL))

    def __post_init__(self):
        check_at_least(self, 0, "workers")
        check_at_least(self, 1, "read_threads")
        if self.on_error not in ON_ERROR_CHOICES:
            raise ConfigError(f"on_error: must be {' or '.join(ON_ERROR_CHOICES)}, got {self.on_error!r}")

    def connect(self) -> None:
        """Point the S3 client at `endpoint_url` (before anything is read)."""
        from fmashard.storage import set_endpoint_url  # noqa: PLC0415

        set_endpoint_url(self.endpoint_url)

    def loader_config(self, batch_size: int, shuffle: bool = False, **plan) -> LoaderConfig:
        """The `LoaderConfig` of a loader reading with these options; `plan`: the other PlanConfig fields
        (seed, shuffle_buffer, equal_ranks, drop_last)."""
        from fmashard.data.loader import LoaderConfig  # noqa: PLC0415 - torch

        return LoaderConfig(batch_size=batch_size, shuffle=shuffle, num_workers=self.workers,
                            read_threads=self.read_threads, on_error=self.on_error, check_crc=self.check_crc,
                            **plan)
