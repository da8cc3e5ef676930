"""What `fmashard bench` runs: the loader names and its typed, frozen config.

  raw                the physical limit: a plain sequential `readinto` loop over the same shard files into
                     one reused buffer (half a core's L2, at most 1 MiB; for URLs: GETs of the same objects
                     with the same client), no parsing at all
  fmashard-host      fmashard's host path: shard bytes -> collated (B, N) int16 batch buffer
  fmashard-host-crc  the same with `check_crc`: each sample's audio checked against the build's crc32
  fmashard           fmashard's full path: the same + decode and windowing on the device -> (B*W, 1, L) float
  dali               DALI's webdataset reader, cast/scale/windows in the pipeline (extra `dali`)
  naive              the notebook: torch.load one float32 .pt per track, windows cut in Python, default collate
  naive-mp3          the notebook's other mode: decode + resample each MP3 on every epoch
  fmashard-logmel    the full path + log-mel features on the device (`make_features("logmel")`, batched
                     over all windows of the batch) -> (B*W, 1, 128, 216) float
  naive-logmel       the naive .pt Dataset computing the same mel spectrogram on the CPU in `__getitem__`,
                     window by window (what users do without fmashard) -> W x (B, 1, 128, 216)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from fmashard.errors import UserError

LOADERS = ("raw", "fmashard-host", "fmashard-host-crc", "fmashard", "dali", "naive", "naive-mp3", "fmashard-logmel",
           "naive-logmel")
FILES_LOADERS = ("naive", "naive-logmel")   # read a `--layout files` build (--naive)
# Old names (after the shard format, not the loader): still accepted, with a note, for one release.
ALIASES = {"wds": "fmashard", "wds-host": "fmashard-host", "wds-host-crc": "fmashard-host-crc"}
DEFAULT_LOADERS = ("naive-mp3", "naive", "fmashard-host", "fmashard", "raw")


@dataclass(frozen=True)
class BenchConfig:
    shards: str
    naive: str | None = None
    fma_dir: str | None = None
    loaders: tuple[str, ...] | None = None   # None: DEFAULT_LOADERS (naive-mp3 only with fma_dir)
    workers: tuple[int, ...] = (0,)
    batch_size: int = 8
    rounds: int = 5
    device: str = "auto"
    split: str = "training"
    max_tracks: int | None = None
    with_model: str | None = None
    amp: bool = False
    model_steps: int = 4
    seed: int = 0
    min_seconds: float = 1.0   # a measurement repeats its pass until it has run this long

    def __post_init__(self):
        loaders, _ = resolve_loaders(self)
        unknown = [name for name in loaders if name not in LOADERS]
        if unknown:
            raise UserError(f"--loaders: unknown {', '.join(unknown)} (choose from {', '.join(LOADERS)})")
        for name in FILES_LOADERS:
            if name in loaders and not self.naive:
                raise UserError(f"--loaders {name} needs --naive SRC_FILES (a `fmashard build --layout files` output)")
        if self.rounds < 1 or self.batch_size < 1:
            raise UserError("--rounds and --batch-size must be >= 1")
        if any(w < 0 for w in self.workers):
            raise UserError("--workers: worker counts must be >= 0")


def resolve_loaders(config: BenchConfig) -> tuple[tuple[str, ...], list[str]]:
    """The loaders to run, old names replaced by the new ones, and one note for each thing changed."""
    notes = []
    if config.loaders is None:
        loaders = DEFAULT_LOADERS
        if not config.fma_dir:
            loaders = tuple(name for name in loaders if name != "naive-mp3")
            notes.append("naive-mp3 left out of the default loaders: it needs --fma-dir (the FMA folder the "
                         "shards were built from)")
        return loaders, notes
    old = [name for name in config.loaders if name in ALIASES]
    if old:
        notes.append(f"--loaders {', '.join(old)}: now called {', '.join(ALIASES[n] for n in old)} "
                     f"(the old names go in the next release)")
    return tuple(ALIASES.get(name, name) for name in config.loaders), notes


def with_resolved_loaders(config: BenchConfig, log=print) -> BenchConfig:
    """The same config with its loaders spelled out under their current names; the notes go to `log`."""
    loaders, notes = resolve_loaders(config)
    for note in notes:
        log(note)
    return replace(config, loaders=loaders)
