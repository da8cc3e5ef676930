"""Splits of a corpus without a split column (shard_tools.splits): every split with a share gets a group when
there are enough, split sizes follow the ratios, no group is in two splits, the output is the same for any
worker count; the build's one-line warnings, the same for a table, a folder per class and FMA."""
from __future__ import annotations

import csv
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from fmashard.errors import UserError
from shard_tools.build import BuildConfig, build_shards
from shard_tools.corpus import parse_ratios
from shard_tools.fma_metadata import load_selection
from shard_tools.selection import SPLITS, Selection, TrackRef
from shard_tools.splits import SMALL_CORPUS, assign_splits, check_training, hash_split, quotas, split_warnings
from tests.conftest import run_fmashard
from tests.test_corpus import write_audio, write_table

DEFAULT = parse_ratios("80,10,10")
LONG = dict(clip_seconds=1.0, min_seconds=0.5, long_tracks="all", shard_size="16KB")


# ---------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("n, expected", [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1]), (5, [3, 1, 1]),
                                         (10, [8, 1, 1]), (15, [12, 2, 1]), (100, [80, 10, 10])])
def test_quotas_follow_the_ratios_and_give_every_share_a_group_while_there_are_enough(n, expected):
    assert quotas(n, DEFAULT) == expected


def test_a_split_without_a_share_gets_no_group():
    assert quotas(10, parse_ratios("80,20,0")) == [8, 2, 0]
    assert quotas(3, parse_ratios("100,0,0")) == [3, 0, 0]
    assert quotas(7, parse_ratios("1,1,1")) == [3, 2, 2]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_every_split_with_a_share_gets_a_group_and_no_group_gets_two(n):
    keys = [f"artist {i}" for i in range(n)]
    assigned, rule = assign_splits(keys + keys[::-1], DEFAULT)   # each group named twice, as by its tracks
    assert rule == "rank" and sorted(assigned) == sorted(keys)
    assert Counter(assigned.values()) == {s: c for s, c in zip(SPLITS, quotas(n, DEFAULT)) if c}
    assert set(assigned.values()) == set(SPLITS[:min(n, 3)])   # all three splits from 3 groups on
    assert assign_splits(reversed(keys), DEFAULT)[0] == assigned   # the order of the rows does not matter


def test_a_small_corpus_moves_at_most_one_group_per_cut_when_a_group_is_added():
    for n in range(3, 80):
        keys = [f"g{i}" for i in range(n)]
        before, after = assign_splits(keys, DEFAULT)[0], assign_splits([*keys, "added"], DEFAULT)[0]
        assert sum(before[k] != after[k] for k in keys) <= 2, n


def test_a_large_corpus_is_cut_by_place_and_a_tiny_share_still_gets_a_group():
    keys = [f"g{i}" for i in range(SMALL_CORPUS)]
    assigned, rule = assign_splits(keys, DEFAULT)
    assert rule == "place" and all(assigned[k] == hash_split(k, DEFAULT) for k in keys)
    tiny = parse_ratios("99.9,0.05,0.05")
    by_place = Counter(hash_split(k, tiny) for k in keys)
    empty = [s for s in SPLITS if not by_place[s]]
    assert empty   # the place cut leaves a 0.05% share of 1000 groups empty here ...
    filled, _ = assign_splits(keys, tiny)
    assert set(filled.values()) == set(SPLITS)   # ... and the fewest moves fill it: one group each
    assert sum(filled[k] != hash_split(k, tiny) for k in keys) == len(empty)


# ---------------------------------------------------------------------------------------- builds
def grouped_table(root: Path, groups: int) -> tuple[Path, dict[str, str]]:
    """`groups` artists with 1-3 tracks each, 1.5-3.6 s long (two or more 1-s clips); {path: group}."""
    rows = []
    for g in range(groups):
        for t in range(1 + g % 3):
            rel = f"audio/a{g}/t{t}.wav"
            write_audio(root / rel, 1.5 + 0.7 * ((g + t) % 4), seed=10 * g + t, freq=200.0 * (1 + g % 2))
            rows.append({"path": rel, "label": f"genre{g % 2}" if groups > 1 else f"genre{t % 2}",
                         "group": f"artist {g}"})
    if len({r["label"] for r in rows}) < 2:   # one group of one track: a second track, for a second class
        write_audio(root / "audio/a0/t1.wav", 2.0, seed=99)
        rows.append({"path": "audio/a0/t1.wav", "label": "genre1", "group": "artist 0"})
    return write_table(root / "tracks.csv", rows), {r["path"]: r["group"] for r in rows}


def split_of_tracks(out: Path) -> dict[str, set[int]]:
    """The track ids each split's shards hold (from the member names: {track_id:06d}_{clip:04d}.ext)."""
    held: dict[str, set[int]] = {}
    for split in SPLITS:
        for tar in sorted((out / split).glob("*.tar")):
            with tarfile.open(tar) as f:
                held.setdefault(split, set()).update(int(m.name.split("_")[0]) for m in f.getmembers())
    return held


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 2, 3, 5, 10])
def test_small_corpora_fill_every_split_they_can_the_same_for_any_worker_count(groups, tmp_path, caplog):
    table, group_of = grouped_table(tmp_path / "corpus", groups)
    outs = []
    for workers in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fmashard"):
            build_shards(BuildConfig(corpus=str(table), out=str(tmp_path / f"out{workers}"), workers=workers, **LONG))
        outs.append(tmp_path / f"out{workers}")
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file() and ".fmashard" not in str(p))
    assert len(files) > 3 and files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*")
                                               if p.is_file() and ".fmashard" not in str(p))
    for rel in files:   # byte-identical: shards, .idx and the manifest
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    filled = [s for s in SPLITS if manifest["splits"][s]["num_tracks"]]
    assert filled == list(SPLITS[:min(groups, 3)]), manifest["splits"]
    paths = sorted(group_of)   # track ids are the positions of the sorted paths
    groups_in = {s: {group_of[paths[i]] for i in ids} for s, ids in split_of_tracks(outs[0]).items()}
    assert sum(len(g) for g in groups_in.values()) == len(set(group_of.values()))   # no group in two splits
    empty_warnings = [r.getMessage() for r in caplog.records if "for 3 splits with a share" in r.getMessage()]
    assert len(empty_warnings) == (groups < 3), caplog.records


@pytest.mark.slow
def test_a_build_with_too_few_groups_says_so_in_one_line_and_counts_each_split(tmp_path):
    table, _ = grouped_table(tmp_path / "corpus", 2)
    run = run_fmashard("build", "--corpus", table, "--out", tmp_path / "out", "--long-tracks", "all",
                       "--clip-seconds", "1", "--min-seconds", "0.5", "--workers", "1")
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {table}: 2 groups for 3 splits with a share (--split-ratios 80,10,10): split "
                        "'test' has no groups (`fmashard evaluate --split test` will have nothing to evaluate); "
                        "add groups, or give it no share: --split-ratios 80,10,0"], run.stderr
    splits = json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]
    assert [splits[s]["num_tracks"] for s in SPLITS] == [1, 2, 0]   # artist 0: 1 track, artist 1: 2 tracks
    clips = [splits[s]["num_samples"] for s in SPLITS]
    assert run.stdout.splitlines()[-1] == (f"  training 1 track ({clips[0]} clips), validation 2 tracks "
                                           f"({clips[1]} clips), test 0 tracks (0 clips)"), run.stdout


# ---------------------------------------------------------------------------------------- warnings
def selection_of(counts: dict[str, int], split_by: str, groups: dict[str, int] | None = None) -> Selection:
    tracks, next_id = {}, 0
    for split, n in counts.items():
        tracks[split] = [TrackRef(next_id + i, "g", 0, split) for i in range(n)]
        next_id += n
    return Selection("table", ["g", "h"], 0, tracks, split_by=split_by, groups=groups)


def test_one_group_for_three_splits_is_one_line_with_the_flag_that_changes_it():
    lines = split_warnings(selection_of({"training": 3, "validation": 0, "test": 0}, "rank(hash(group))",
                                        {"training": 1, "validation": 0, "test": 0}), "t.csv", DEFAULT)
    assert lines == ["t.csv: 1 group for 3 splits with a share (--split-ratios 80,10,10): splits 'validation' "
                     "and 'test' have no groups (`fmashard train` will train without validation: last.pt only, "
                     "no best.pt; `fmashard evaluate --split test` will have nothing to evaluate); add groups, "
                     "or give them no share: --split-ratios 80,0,0"]


def test_a_split_far_from_its_share_is_one_line_with_the_counts():
    selection = selection_of({"training": 8, "validation": 20, "test": 1}, "rank(hash(group))",
                             {"training": 8, "validation": 1, "test": 1})
    lines = split_warnings(selection, "t.csv", DEFAULT)
    assert [line.split(": split ")[1].split(" has")[0] for line in lines] == ["'training'", "'validation'"]
    assert lines[1] == ("t.csv: split 'validation' has 20 of 29 tracks (69% in 1 of 10 groups) for a 10% share "
                        "(--split-ratios 80,10,10): too few or too uneven groups for these shares; change "
                        "--split-ratios, add groups, or set the splits in a table's split column")
    even = selection_of({"training": 8, "validation": 1, "test": 1}, "rank(hash(group))",
                        {"training": 8, "validation": 1, "test": 1})
    assert split_warnings(even, "t.csv", DEFAULT) == []   # 8/1/1 is 80/10/10: nothing to say


def test_folder_splits_by_path_speak_of_tracks():
    lines = split_warnings(selection_of({"training": 1, "validation": 1, "test": 0}, "rank(hash(path))"),
                           "genres", DEFAULT)
    assert lines[0].startswith("genres: 2 tracks for 3 splits with a share (--split-ratios 80,10,10): split "
                               "'test' has no tracks") and lines[0].endswith("add tracks, or give it no share: "
                                                                             "--split-ratios 80,10,0")


def test_an_empty_split_given_by_a_table_is_one_line():
    lines = split_warnings(selection_of({"training": 4, "validation": 0, "test": 2}, "table"), "t.csv", DEFAULT)
    assert lines == ["t.csv: split 'validation' has no tracks (the table's split column gives it none; "
                     "`fmashard train` will train without validation: last.pt only, no best.pt); give some rows "
                     "that split, or drop the column to split by --split-ratios"]


def write_fma_tracks(root: Path, splits: list[str]) -> Path:
    """A tracks.csv in FMA's layout with only the columns a selection reads, one track per entry of `splits`."""
    path = root / "fma_metadata" / "tracks.csv"
    path.parent.mkdir(parents=True)
    rows = [["", "set", "set", "track"], ["", "split", "subset", "genre_top"], ["track_id", "", "", ""]]
    rows += [[str(2 + i), split, "small", "Rock" if i % 2 else "Pop"] for i, split in enumerate(splits)]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_fma_splits_follow_the_same_rules(tmp_path):
    tracks_csv = write_fma_tracks(tmp_path / "fma", ["training", "training", "test"])
    selection = load_selection(tmp_path / "fma", "small")   # an empty split is no longer an error here
    assert [len(selection.tracks[s]) for s in SPLITS] == [2, 0, 1]
    assert split_warnings(selection, str(tracks_csv), DEFAULT) == [
        f"{tracks_csv}: split 'validation' has no tracks (its ('set', 'split') column, in subset 'small', gives it "
        "none; `fmashard train` will train without validation: last.pt only, no best.pt); choose a larger --subset"]
    only_test = load_selection(write_fma_tracks(tmp_path / "fma2", ["test"]).parents[1], "small")
    with pytest.raises(UserError, match="no track in the training split"):
        check_training(only_test, "tracks.csv")


def test_a_split_whose_tracks_were_all_skipped_is_one_line(tmp_path, caplog):
    root = tmp_path / "corpus"
    for i in range(3):
        write_audio(root / f"t{i}.wav", 1.5, seed=i)
    table = write_table(root / "t.csv", [{"path": "t0.wav", "label": "a", "split": "training"},
                                         {"path": "t1.wav", "label": "b", "split": "training"},
                                         {"path": "gone.wav", "label": "a", "split": "validation"},
                                         {"path": "t2.wav", "label": "b", "split": "test"}])
    with caplog.at_level(logging.WARNING, logger="fmashard"):
        report = build_shards(BuildConfig(corpus=str(table), out=str(tmp_path / "out"), workers=1, **LONG))
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {tmp_path / 'out'}: split 'validation' has no tracks: all were skipped (the manifest's "
        "`skipped` says why; `fmashard train` will train without validation: last.pt only, no best.pt)"]
    assert report.splits["validation"] == (0, 0) and report.splits["training"][0] == 2
