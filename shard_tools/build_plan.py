"""Which track goes into which shard, fixed before anything is decoded.

Per split, the track ids are sorted, shuffled with `np.random.default_rng(seed)` (so a shard mixes
genres) and cut into chunks of `samples_per_shard`.  Chunk i is shard i.  A skipped track only makes its
own shard shorter and never moves another track, so every shard can be built, checked and resumed on
its own.  With `--layout files` the same chunks are the units of the resume journal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    tracks: tuple  # of fma_metadata.TrackRef, in write order

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @property
    def tar_path(self) -> str:
        return f"{self.split}/{self.name}.tar"

    @property
    def index_path(self) -> str:
        return f"{self.split}/{self.name}.idx"


def shuffled_tracks(tracks, seed: int) -> list:
    ordered = sorted(tracks, key=lambda t: t.track_id)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in order]


def plan_shards(tracks_by_split: dict, samples_per_shard: int, seed: int) -> list[ShardPlan]:
    plans = []
    for split, tracks in tracks_by_split.items():
        shuffled = shuffled_tracks(tracks, seed)
        for index, start in enumerate(range(0, len(shuffled), samples_per_shard)):
            plans.append(ShardPlan(split, index, tuple(shuffled[start : start + samples_per_shard])))
    return plans
