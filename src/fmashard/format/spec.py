"""`DatasetSpec`: one split's shards and the fixed layout of their records (what every data stage needs
to know about the shards it reads); `ShardInfo`: one shard of it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fmashard.format.codecs import CODECS
from fmashard.format.tar import is_fixed_layout


class StoredAudio:
    """What `clip_samples` values of `stored_codec` are on disk: the audio member's extension, its dtype and
    its size — looked up in the codec registry (a mixin for `DatasetSpec` and the build's config)."""

    @property
    def audio_ext(self) -> str:
        return CODECS[self.stored_codec].ext

    @property
    def dtype(self) -> str:
        return CODECS[self.stored_codec].dtype

    @property
    def sample_bytes(self) -> int:
        return self.clip_samples * CODECS[self.stored_codec].bytes_per_sample


@dataclass(frozen=True)
class ShardInfo:
    url: str
    num_samples: int
    crc32: Sequence[int] | None = None   # of each sample's audio, from the manifest (data.sources: an array('I'))


@dataclass(frozen=True)
class DatasetSpec(StoredAudio):
    """One split's shards and the fixed layout of their records."""

    shards: tuple[ShardInfo, ...]
    record_bytes: int
    clip_samples: int
    codec: str = "pcm16"
    sample_rate: int = 22050
    vocabulary: tuple[str, ...] | None = None
    split: str | None = None
    manifest: dict = field(default=None, compare=False, repr=False)   # without the per-shard lists (shards)

    @property
    def stored_codec(self) -> str:
        return self.codec

    @property
    def fixed_layout(self) -> bool:
        """Records are fmashard's fixed layout (`fmashard.format.tar`): the fast read paths apply."""
        return is_fixed_layout(self.record_bytes, self.sample_bytes)

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)
