"""Which track goes into which shard, fixed before anything is decoded.

Per split, the track ids are sorted, shuffled with `np.random.default_rng(seed)` (so a shard mixes
genres) and cut into chunks of `samples_per_shard` records.  Chunk i is shard i.  A skipped track only
makes its own shard shorter and never moves another track, so every shard can be built, checked and
resumed on its own.  With `--layout files` the same chunks are the units of the resume journal.

`--long-tracks all`: a track is several records, and how many is known for sure only once it is decoded.
So the plan stays one of *tracks*: every clip of a track goes into the track's shard (clips never cross
shards, so never splits), and chunks are cut by an estimate of each track's clips from its header
(`probe_clips`: soundfile's frame count and rate, no decoding; 1 when the header cannot be read).  The
estimate only decides which tracks share a shard, and it is a pure function of the files, so the plan
is fixed up front and the same for any worker count; a wrong estimate only makes a shard a little larger
or smaller than `--shard-size`.  Inside a shard the clips are written in a seeded random order
(`clip_order`), so the clips of one track are spread over the shard instead of arriving one after another
at the loader's shuffle buffer.
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


def plan_shards(tracks_by_split: dict, samples_per_shard: int, seed: int,
                clips: dict[int, int] | None = None) -> list[ShardPlan]:
    """`clips`: estimated records per track id (`probe_clips`); None: one each."""
    plans = []
    for split, tracks in tracks_by_split.items():
        chunk, size, index = [], 0, 0
        for track in shuffled_tracks(tracks, seed):
            n = clips.get(track.track_id, 1) if clips else 1
            if chunk and size + n > samples_per_shard:
                plans.append(ShardPlan(split, index, tuple(chunk)))
                chunk, size, index = [], 0, index + 1
            chunk.append(track)
            size += n
        if chunk:
            plans.append(ShardPlan(split, index, tuple(chunk)))
    return plans


def probe_clips(tracks, settings, threads: int = 8) -> dict[int, int]:
    """track id -> the number of clips its header promises (see the module docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    from shard_tools.audio import clip_starts

    def clips_of(track) -> int:
        try:
            frames, rate = _header(track.path)
            return len(clip_starts(int(round(frames * settings.sample_rate / rate)), settings))
        except Exception:   # unreadable or missing: the decode records why; it is one record at most
            return 1

    with ThreadPoolExecutor(threads) as pool:
        return dict(zip((t.track_id for t in tracks), pool.map(clips_of, tracks)))


def _header(path: str) -> tuple[int, int]:
    """(frames, rate) from the header: for a URL through ranged reads (`storage.open_ranged`: what the
    header needs, not the whole file; 256-512 KB per file in benchmarks/header_probe.py)."""
    import soundfile as sf

    if "://" in path:
        from fmashard import storage

        with storage.open_ranged(path) as f:
            info = sf.info(f)
    else:
        info = sf.info(path)
    return info.frames, info.samplerate


def clip_order(num_clips: int, seed: int, plan: ShardPlan) -> list[int]:
    """The order a shard's clips are written in: a permutation seeded by (seed, split, shard index)."""
    split = sum(ord(c) << (8 * i) for i, c in enumerate(plan.split[:7]))
    return np.random.default_rng([seed, split, plan.index, 0xC11B]).permutation(num_clips).tolist()
