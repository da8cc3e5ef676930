"""What a build selects, whatever the input (FMA's metadata, a table, a folder per class): the tracks
per split with their labels and audio paths.  Light on purpose (no pandas): the build's workers import it."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("training", "validation", "test")
SUBSETS = ("small", "medium", "large")   # the values of FMA's ('set', 'subset')
# what a build can select: `full` is every track (as `large`) with fma_full/'s untrimmed audio
BUILD_SUBSETS = (*SUBSETS, "full")


@dataclass(frozen=True)
class TrackRef:
    """One selected track: its id, genre name, label (index into the vocabulary) and split."""

    track_id: int
    genre: str
    label: int
    split: str
    path: str = ""      # what to decode: a file path or URL ("" for FMA until `with_paths`)
    shown: str = ""     # the path as the user gave it (skip lists name it), "" for FMA's own layout


@dataclass(frozen=True)
class Selection:
    """The tracks of one subset to shard, per split, sorted by track_id."""

    subset: str          # FMA's subset, or "table" / "folder" (shard_tools.corpus)
    vocabulary: list[str]
    excluded_no_genre: int
    tracks: dict[str, list[TrackRef]]
    split_by: str = "fma"   # where the splits come from: fma, table, [rank(]hash(group|path)[)] (shard_tools.splits)
    groups: dict[str, int] | None = None   # groups (tracks without a group column) per split, for hash splits

    @property
    def num_tracks(self) -> int:
        return sum(len(refs) for refs in self.tracks.values())
