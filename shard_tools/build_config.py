"""`BuildConfig`: the typed, validated arguments of `fmashard build`, and what follows from them."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass

from fmashard.errors import UserError
from fmashard.format.codecs import CODECS, FILES_CODEC, SHARD_CODECS
from fmashard.format.spec import StoredAudio
from fmashard.format.tar import END_OF_ARCHIVE, record_bytes
from shard_tools.audio import ClipSettings
from shard_tools.corpus import parse_ratios
from shard_tools.selection import BUILD_SUBSETS
from shard_tools.splits import SPLIT_RULE

LAYOUTS = ("shards", "files")
LONG_TRACKS = ("first", "all")
ENGINE_NAMES = ("local", "ray")   # shard_tools.engines.ENGINES (imported lazily there: Ray is optional)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ConfigError(UserError, ValueError):
    """A bad build argument: a ValueError for library callers, a one-line exit 2 in the CLI."""


def parse_size(text: int | str) -> int:
    """'256MB' / '64MiB' / '5M' / '1g' / 4096 -> bytes.  K/M/G are binary (1 MB = 2**20 bytes), so the
    default '256MB' is 268,435,456 bytes as in ARCHITECTURE.md."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"shard_size: expected a size like 256MB, 64MiB or 4096, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class BuildConfig(StoredAudio):
    fma_dir: str = ""                # FMA folder (fma_metadata/, fma_<subset>/) ...
    out: str = ""
    subset: str = "small"
    corpus: str = ""                 # ... or a table (CSV/TSV/JSONL) or a folder per class: shard_tools.corpus
    split_ratios: str | tuple = "80,10,10"   # corpus without a split column: hash split (training,validation,test)
    long_tracks: str = "first"       # first: one clip per track; all: every clip (ClipSettings)
    clip_hop_seconds: float | None = None   # long_tracks all: seconds between clip starts (None: clip_seconds)
    workers: int | None = None  # None: os.cpu_count()
    shard_size: int | str = "256MB"
    codec: str = "pcm16"
    clip_seconds: float = 30.0
    sample_rate: int = 22050
    min_seconds: float = 27.5
    seed: int = 0
    layout: str = "shards"
    overwrite: bool = False
    engine: str = "local"            # who runs the shard tasks: shard_tools.engines (not part of identity())
    ray_address: str = ""            # --engine ray: a cluster address ("auto", "ray://host:10001"); "": start one

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "fma_dir", str(self.fma_dir or ""))
        set_(self, "corpus", str(self.corpus or ""))
        set_(self, "out", str(self.out))
        if bool(self.fma_dir) == bool(self.corpus):
            raise ConfigError("input: give either --fma-dir (FMA) or --corpus (a table or a folder per class)")
        try:
            set_(self, "split_ratios", parse_ratios(self.split_ratios))
        except UserError as exc:
            raise ConfigError(str(exc)) from None
        if self.long_tracks not in LONG_TRACKS:
            raise ConfigError(f"long_tracks: must be one of {', '.join(LONG_TRACKS)}, got {self.long_tracks!r}")
        if self.long_tracks == "all" and self.layout != "shards":
            raise ConfigError("long_tracks: all needs --layout shards (a .pt file holds one clip per track)")
        if self.clip_hop_seconds is not None and not self.clip_hop_seconds > 0:
            raise ConfigError(f"clip_hop_seconds: must be > 0, got {self.clip_hop_seconds}")
        set_(self, "shard_size", parse_size(self.shard_size))
        set_(self, "workers", (os.cpu_count() or 1) if self.workers is None else int(self.workers))
        if not self.out:
            raise ConfigError("out: an output folder or s3:// prefix is required")
        if self.fma_dir and not self.subset:
            raise ConfigError(f"subset: required ({', '.join(BUILD_SUBSETS)})")
        if self.codec not in SHARD_CODECS:
            raise ConfigError(f"codec: must be one of {', '.join(SHARD_CODECS)}, got {self.codec!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout: must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.engine not in ENGINE_NAMES:
            raise ConfigError(f"engine: must be one of {', '.join(ENGINE_NAMES)}, got {self.engine!r}")
        if self.ray_address and self.engine != "ray":
            raise ConfigError("ray_address: only with --engine ray")
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.shard_size <= 0:
            raise ConfigError(f"shard_size: must be > 0 bytes, got {self.shard_size}")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate: must be > 0, got {self.sample_rate}")
        if not self.clip_seconds > 0:
            raise ConfigError(f"clip_seconds: must be > 0, got {self.clip_seconds}")
        if not 0 <= self.min_seconds <= self.clip_seconds:
            raise ConfigError(f"min_seconds: must be between 0 and clip_seconds ({self.clip_seconds:g}), "
                              f"got {self.min_seconds:g}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if self.clip_samples < 1:
            raise ConfigError(f"clip_seconds: {self.clip_seconds:g} s at {self.sample_rate} Hz is no sample at all")

    # ------------------------------------------------------------------ derived layout
    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def stored_codec(self) -> str:
        """What a sample's audio is stored as: the codec, or float32 tensors for --layout files."""
        return self.codec if self.layout == "shards" else FILES_CODEC

    @property
    def record_bytes(self) -> int:
        return record_bytes(self.clip_samples * CODECS[self.codec].bytes_per_sample)

    @property
    def samples_per_shard(self) -> int:
        return max(1, (self.shard_size - len(END_OF_ARCHIVE)) // self.record_bytes)

    @property
    def hop_samples(self) -> int:
        return round((self.clip_hop_seconds or self.clip_seconds) * self.sample_rate)

    @property
    def clip_settings(self) -> ClipSettings:
        return ClipSettings(self.sample_rate, self.clip_samples, self.min_seconds, self.stored_codec,
                            self.long_tracks, self.hop_samples)

    def params(self) -> dict:
        """The manifest's `params` (ARCHITECTURE.md)."""
        params = {"subset": self.subset if self.fma_dir else None, "sample_rate": self.sample_rate,
                  "clip_seconds": float(self.clip_seconds), "min_seconds": float(self.min_seconds),
                  "codec": self.codec, "shard_size": self.shard_size, "seed": self.seed,
                  "long_tracks": self.long_tracks}
        if self.long_tracks == "all":
            params["clip_hop_seconds"] = self.hop_samples / self.sample_rate
        return params

    def identity(self) -> dict:
        """Everything that changes the output bytes (not workers, engine, overwrite): a resume must match it."""
        fields = asdict(self)
        for transient in ("workers", "overwrite", "out", "engine", "ray_address"):
            fields.pop(transient)
        fields["fma_dir"] = os.path.abspath(self.fma_dir) if self.fma_dir else ""
        fields["corpus"] = os.path.abspath(self.corpus) if self.corpus else ""
        if self.corpus and os.path.isfile(self.corpus):   # a changed table is another build
            with open(self.corpus, "rb") as f:
                fields["corpus_sha256"] = hashlib.sha256(f.read()).hexdigest()
        fields["split_ratios"] = list(self.split_ratios)
        if self.corpus:   # splits made under another rule (an older fmashard) are another build
            fields["split_rule"] = SPLIT_RULE
        fields["clip_seconds"], fields["min_seconds"] = float(self.clip_seconds), float(self.min_seconds)
        return fields
