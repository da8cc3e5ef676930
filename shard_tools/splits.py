"""Which split a track goes to when the input does not say (a table without a `split` column, a folder per
class), and what the build says about the splits it got (the same lines for every kind of input).

Every group (a table's `group`, else the track's path) has a fixed place in [0, 1): sha256 of its name, the
first 8 bytes as a fraction of 2**64 (`place`).  Two rules cut the groups sorted by that place:

- fewer than `SMALL_CORPUS` groups: by rank.  The first `quotas(n)[0]` groups go to training, the next
  `quotas(n)[1]` to validation, the rest to test; the quotas follow `--split-ratios` as closely as whole
  groups allow (largest remainder), and every split with a share gets a group while there are enough.
  Adding groups can move a group next to a cut into the neighbouring split (at most one per cut and per
  group added).
- from `SMALL_CORPUS` groups on: by place.  A group goes to the split whose share of [0, 1) holds its place,
  so adding groups never moves another; only a split with a share that the cut leaves empty (a very small
  share) is given the donor's group nearest to it, from the split with the most groups.

So a group never crosses splits, and the assignment depends on the groups' names and the ratios alone (not
the seed, the worker count or the order of the rows).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from fmashard.errors import UserError
from shard_tools.selection import SPLITS, Selection

SMALL_CORPUS = 1000          # groups: below, cut by rank (exact quotas); from here on, by place (stable)
SPLIT_RULE = "rank<1000/place"   # in a corpus build's identity: a build made under another rule is another build
FAR = 0.5                    # a split is far from its share when off by more than this fraction of it ...
                             # ... and by more than one group of the average size


def place(key: str) -> float:
    """The group's fixed place in [0, 1)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def hash_split(key: str, ratios: tuple[float, float, float]) -> str:
    """The split whose share of [0, 1) holds the key's place (the rule from SMALL_CORPUS groups on)."""
    fraction = place(key)
    if fraction < ratios[0]:
        return SPLITS[0]
    return SPLITS[1] if fraction < ratios[0] + ratios[1] else SPLITS[2]


def active_splits(ratios) -> list[int]:
    """The splits with a share, biggest share first (ties: training, validation, test)."""
    return sorted((i for i, r in enumerate(ratios) if r > 0), key=lambda i: (-ratios[i], i))


def quotas(n: int, ratios) -> list[int]:
    """Groups per split: `n * ratio` rounded by largest remainder, then every split with a share that got
    none takes one from the split with the most (while that one keeps at least one)."""
    exact = [round(n * r, 9) for r in ratios]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in active_splits(ratios):
        if counts[i] == 0:
            donor = _donor(counts)
            if donor is None:
                break
            counts[donor], counts[i] = counts[donor] - 1, 1
    return counts


def _donor(counts: list[int]) -> int | None:
    """The split with the most groups (ties: the first), if it can give one away."""
    donor = max(range(len(counts)), key=lambda i: (counts[i], -i))
    return donor if counts[donor] > 1 else None


def assign_splits(keys: Iterable[str], ratios) -> tuple[dict[str, str], str]:
    """({group: split}, the rule: "rank" or "place") for the distinct `keys`."""
    ranked = sorted(set(keys), key=lambda k: (place(k), k))
    if len(ranked) < SMALL_CORPUS:
        splits, start = {}, 0
        for split, count in zip(SPLITS, quotas(len(ranked), ratios)):
            splits.update((key, split) for key in ranked[start:start + count])
            start += count
        return splits, "rank"
    groups: dict[str, list[str]] = {split: [] for split in SPLITS}
    for key in ranked:
        groups[hash_split(key, ratios)].append(key)
    _fill_empty(groups, ratios)
    return {key: split for split, members in groups.items() for key in members}, "place"


def _fill_empty(groups: dict[str, list[str]], ratios) -> None:
    """Give each split with a share but no group the donor's group nearest to it (`groups`: sorted by place)."""
    for i in active_splits(ratios):
        if groups[SPLITS[i]]:
            continue
        donor = _donor([len(groups[s]) for s in SPLITS])
        if donor is None:
            return
        taken = groups[SPLITS[donor]].pop(-1 if donor < i else 0)
        groups[SPLITS[i]].append(taken)


# ---------------------------------------------------------------------------------------- what the build says
def check_training(selection: Selection, source: str) -> None:
    """Every kind of input: a build needs training tracks."""
    if not selection.tracks.get(SPLITS[0]):
        raise UserError(f"{source}: no track in the training split (check the split column, --split-ratios or "
                        "--subset)")


def split_warnings(selection: Selection, source: str, ratios) -> list[str]:
    """One line per problem with the splits a build is about to write, before anything is decoded: splits
    with a share that must stay empty, splits far from their share, empty splits given by the input."""
    if selection.split_by in ("fma", "table"):
        return _given_empty(selection, source)
    counts = {s: len(refs) for s, refs in selection.tracks.items()}
    groups = selection.groups or counts
    unit = "group" if "group" in selection.split_by else "track"
    lines = _must_stay_empty(groups, ratios, source, unit)
    if lines:   # too few groups: the shares of the rest say nothing more
        return lines
    return [_far(split, counts, groups, ratios, source, unit) for split in SPLITS
            if _is_far(split, counts, groups, ratios)]


def _given_empty(selection: Selection, source: str) -> list[str]:
    empty = [s for s in SPLITS[1:] if s in selection.tracks and not selection.tracks[s]]
    if not empty:
        return []
    given = "the table's split column" if selection.split_by == "table" else \
        f"its ('set', 'split') column, in subset {selection.subset!r},"
    fix = ("give some rows that split, or drop the column to split by --split-ratios"
           if selection.split_by == "table" else "choose a larger --subset")
    return [f"{source}: {_names(empty)} no tracks ({given} gives {_it(empty)} none; "
            f"{_consequence(empty)}); {fix}"]


def _must_stay_empty(groups: dict[str, int], ratios, source: str, unit: str) -> list[str]:
    empty = [SPLITS[i] for i in sorted(active_splits(ratios)) if not groups[SPLITS[i]]]
    if not empty:
        return []
    n = sum(groups.values())
    kept = [r if groups[s] else 0.0 for s, r in zip(SPLITS, ratios)]
    return [f"{source}: {n} {unit}{'s' if n != 1 else ''} for {len(active_splits(ratios))} splits with a share "
            f"(--split-ratios {_ratios(ratios)}): {_names(empty)} no {unit}s ({_consequence(empty)}); add "
            f"{unit}s, or give {_it(empty)} no share: --split-ratios {_ratios(kept)}"]


def _is_far(split: str, counts: dict[str, int], groups: dict[str, int], ratios) -> bool:
    i, total, n = SPLITS.index(split), sum(counts.values()), sum(groups.values())
    if not ratios[i] or not groups[split] or not n:
        return False
    off = abs(counts[split] - ratios[i] * total)
    return off > FAR * ratios[i] * total and off > total / n


def _far(split: str, counts: dict[str, int], groups: dict[str, int], ratios, source: str, unit: str) -> str:
    i, total = SPLITS.index(split), sum(counts.values())
    held = f" in {groups[split]} of {sum(groups.values())} groups" if unit == "group" else ""
    return (f"{source}: split {split!r} has {counts[split]} of {total} tracks ({counts[split] / total:.0%}"
            f"{held}) for a {ratios[i]:.0%} share (--split-ratios {_ratios(ratios)}): too few or too uneven "
            f"{unit}s for these shares; change --split-ratios, add {unit}s, or set the splits in a table's split "
            "column")


def _names(splits: list[str]) -> str:
    return f"split {splits[0]!r} has" if len(splits) == 1 else \
        "splits " + " and ".join(repr(s) for s in splits) + " have"


def _it(splits: list[str]) -> str:
    return "it" if len(splits) == 1 else "them"


def _consequence(splits: list[str]) -> str:
    said = {SPLITS[1]: "`fmashard train` will train without validation: last.pt only, no best.pt",
            SPLITS[2]: "`fmashard evaluate --split test` will have nothing to evaluate"}
    return "; ".join(said[s] for s in splits if s in said)


def _ratios(ratios) -> str:
    """As --split-ratios takes them: percentages of the (normalised) ratios, e.g. 80,10,10."""
    return ",".join(f"{100 * r:.4g}" for r in ratios)


def lost_splits(selection: Selection, written: dict[str, dict], out: str) -> list[str]:
    """After the build: splits that had tracks but wrote none (every one of them skipped)."""
    lost = [s for s in SPLITS[1:] if selection.tracks.get(s) and not written.get(s, {}).get("num_tracks")]
    if not lost:
        return []
    return [f"{out}: {_names(lost)} no tracks: all were skipped (the manifest's `skipped` says why; "
            f"{_consequence(lost)})"]
