"""Corpora besides FMA (shard_tools.corpus): a labelled table and a folder per class build, verify and
train; splits keep groups together (shard_tools.splits: tests/test_splits.py); every bad table is one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shard_tools.build import BuildConfig, build_shards
from shard_tools.corpus import SPLITS, hash_split, load_corpus, parse_ratios
from shard_tools.splits import SMALL_CORPUS, assign_splits
from shard_tools.verify import verify_build
from tests.conftest import run_fmashard

FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS"), "wav": ("WAV", "PCM_16"),
           "au": ("AU", "PCM_16"), "flac": ("FLAC", "PCM_16")}
SHORT = dict(clip_seconds=2.0, min_seconds=1.0, shard_size="64KB", workers=1)


def write_audio(path: Path, seconds: float, seed: int, rate: int = 22050, freq: float = 440.0, channels: int = 1):
    """A tone plus a little noise in any format libsndfile writes (chosen by the suffix)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, subtype = FORMATS[path.suffix[1:]]
    with sf.SoundFile(path, "w", rate, channels, subtype, format=fmt) as f:
        for start in range(0, len(data), 1 << 15):   # in blocks: libsndfile's Vorbis encoder crashes on
            f.write(data[start : start + (1 << 15)].astype(np.float32))   # one long write
    return path


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


def table_corpus(root: Path, n: int = 12, with_split: bool = True) -> Path:
    """n tracks over 3 labels in mixed formats (mp3/ogg/wav/au), 2.5 s each; splits given."""
    exts, labels, rows = ["mp3", "ogg", "wav", "au"], ["jazz", "metal", "pop"], []
    for i in range(n):
        rel = f"audio/{labels[i % 3]}/t{i:02d}.{exts[i % 4]}"
        write_audio(root / rel, 2.5, seed=i, rate=(22050, 44100)[i % 2], freq=200.0 * (1 + i % 3), channels=1 + i % 2)
        row = {"path": rel, "label": labels[i % 3]}
        if with_split:
            row["split"] = SPLITS[0] if i < n - 6 else SPLITS[1] if i < n - 3 else SPLITS[2]
        rows.append(row)
    return write_table(root / "tracks.csv", rows)


def folder_corpus(root: Path, per_class: int = 4) -> Path:
    """GTZAN's layout: DIR/<genre>/<genre>.000NN.au (and a .wav, a README and a hidden file to ignore)."""
    for g, genre in enumerate(["blues", "classical", "rock"]):
        for i in range(per_class):
            write_audio(root / genre / f"{genre}.{i:05d}.{'au' if i % 2 else 'wav'}", 2.5, seed=10 * g + i,
                        freq=150.0 * (g + 1))
    (root / "README.txt").write_text("not audio")
    (root / "blues" / ".DS_Store").write_bytes(b"\0")
    return root


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# ---------------------------------------------------------------------------------------- building
@pytest.mark.slow
def test_a_table_corpus_builds_verifies_and_trains(tmp_path):
    table = table_corpus(tmp_path / "corpus")
    out = tmp_path / "shards"
    report = build_shards(BuildConfig(corpus=str(table), out=str(out), **SHORT))
    manifest = manifest_of(out)
    assert report.tracks_written == 12 and report.tracks_skipped == 0
    assert manifest["vocabulary"] == ["jazz", "metal", "pop"]
    assert manifest["source"] == {"kind": "table", "split_by": "table", "split_ratios": None}
    assert [manifest["splits"][s]["num_tracks"] for s in SPLITS] == [6, 3, 3]
    assert verify_build(str(out)).ok
    run = run_fmashard("train", "--shards", str(out), "--out", str(tmp_path / "run"), "--model", "soundnet-large",
                       "--epochs", "1", "--batch-size", "2", "--window-seconds", "0.5", "--windows", "2")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val_tracks"] == 3 and record["val_clips"] == 3 and record["val_track_acc_vote"] is not None


@pytest.mark.slow
def test_a_folder_per_class_builds_verifies_and_trains(tmp_path):
    root = folder_corpus(tmp_path / "gtzan")
    out = tmp_path / "shards"
    run = run_fmashard("build", "--corpus", str(root), "--out", str(out), "--clip-seconds", "2", "--min-seconds",
                       "1", "--split-ratios", "50,25,25", "--workers", "2")
    assert run.returncode == 0, run.stderr
    manifest = manifest_of(out)
    assert manifest["vocabulary"] == ["blues", "classical", "rock"]
    assert manifest["source"] == {"kind": "folder", "split_by": "rank(hash(path))",
                                  "split_ratios": [0.5, 0.25, 0.25]}
    assert manifest["totals"]["tracks_written"] == 12 and manifest["totals"]["tracks_skipped"] == 0
    selection = load_corpus(root, parse_ratios("50,25,25"))
    assigned, _ = assign_splits([t.shown for refs in selection.tracks.values() for t in refs], (0.5, 0.25, 0.25))
    for split in SPLITS:   # the split of each file comes from the paths and the ratios, nothing else
        assert all(assigned[t.shown] == split for t in selection.tracks[split])
    assert verify_build(str(out)).ok
    assert [manifest["splits"][s]["num_tracks"] for s in SPLITS] == [6, 3, 3]   # 12 tracks by 50,25,25
    run = run_fmashard("train", "--shards", str(out), "--out", str(tmp_path / "run"), "--model",
                       "soundnet-large", "--epochs", "1", "--batch-size", "2", "--window-seconds", "0.5",
                       "--windows", "2")
    assert run.returncode == 0, run.stderr


def test_folder_ids_are_sorted_paths_and_other_files_are_ignored(tmp_path):
    root = folder_corpus(tmp_path / "gtzan", per_class=2)
    selection = load_corpus(root, parse_ratios("80,10,10"))
    tracks = sorted((t for refs in selection.tracks.values() for t in refs), key=lambda t: t.track_id)
    assert [t.shown for t in tracks] == sorted(t.shown for t in tracks)
    assert [t.track_id for t in tracks] == list(range(6))
    assert {t.genre: t.label for t in tracks} == {"blues": 0, "classical": 1, "rock": 2}
    assert all(Path(t.path).is_file() and Path(t.path).parent.parent == root for t in tracks)


def split_of_groups(selection, group_of: dict[str, str]) -> dict[str, set]:
    split_of_group: dict[str, set] = {}
    for split, refs in selection.tracks.items():
        for t in refs:
            split_of_group.setdefault(group_of[t.shown], set()).add(split)
    return split_of_group


def test_group_splits_keep_each_group_in_one_split_and_follow_the_ratios(tmp_path):
    rows = [{"path": f"a/{i}.wav", "label": f"c{i % 2}", "group": f"artist{i // 4}"} for i in range(400)]
    first = load_corpus(write_table(tmp_path / "t.csv", rows), parse_ratios("80,10,10"))
    split_of_group = split_of_groups(first, {r["path"]: r["group"] for r in rows})
    assert len(split_of_group) == 100
    assert all(len(s) == 1 for s in split_of_group.values())
    assert [len(first.tracks[s]) for s in SPLITS] == [320, 40, 40]   # 100 groups of 4: 80, 10 and 10 groups
    assert first.split_by == "rank(hash(group))" and first.groups == {"training": 80, "validation": 10, "test": 10}
    shuffled = load_corpus(write_table(tmp_path / "r.csv", rows[::-1]), parse_ratios("80,10,10"))
    assert {t.shown: s for s, refs in shuffled.tracks.items() for t in refs} == \
        {t.shown: s for s, refs in first.tracks.items() for t in refs}   # the rows' order does not matter


def test_large_group_splits_are_stable_when_tracks_are_added(tmp_path):
    rows = [{"path": f"a/{i}.wav", "label": f"c{i % 2}", "group": f"artist{i}"} for i in range(SMALL_CORPUS)]
    first = load_corpus(write_table(tmp_path / "t.csv", rows), parse_ratios("80,10,10"))
    assert first.split_by == "hash(group)"
    assert all(hash_split(f"artist{t.shown[2:-4]}", (0.8, 0.1, 0.1)) == s for s, refs in first.tracks.items()
               for t in refs)
    more = write_table(tmp_path / "more.csv", rows + [{"path": "b/x.wav", "label": "c0", "group": "new"}])
    again = load_corpus(more, parse_ratios("80,10,10"))
    old = {t.shown: s for s, refs in first.tracks.items() for t in refs}
    new = {t.shown: s for s, refs in again.tracks.items() for t in refs}
    assert all(new[path] == split for path, split in old.items())   # adding a track moves no other


@pytest.mark.slow
def test_same_inputs_give_byte_identical_shards_for_any_worker_count(tmp_path):
    table = table_corpus(tmp_path / "corpus", with_split=False)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        build_shards(BuildConfig(corpus=str(table), out=str(out), **{**SHORT, "workers": workers}))
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file() and ".fmashard" not in str(p))
    assert len(files) > 3
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_missing_audio_is_listed_not_fatal(tmp_path):
    table = table_corpus(tmp_path / "corpus", n=6)
    with open(table, "a") as f:
        f.write("audio/nowhere.mp3,jazz,training\n")
    out = tmp_path / "out"
    report = build_shards(BuildConfig(corpus=str(table), out=str(out), **SHORT))
    skipped = manifest_of(out)["skipped"]
    assert report.tracks_written == 6 and [(s["path"], s["reason"]) for s in skipped] == [
        ("audio/nowhere.mp3", "missing audio file")]


# ---------------------------------------------------------------------------------------- bad tables
BAD_TABLES = [
    ("path,genre\na.wav,rock\n", "t.csv: line 1: missing column 'label'"),
    ("path,label,track_id\na.wav,rock,7\nb.wav,pop,7\n", "t.csv: line 3: duplicate track_id 7 (first at line 2)"),
    ("path,label,split\na.wav,rock,training\nb.wav,pop,train\n", "t.csv: line 3: unknown split 'train'"),
    ("path,label\na.wav,rock\nb.wav,rock\n", "every track has the label 'rock'"),
    ("path,label\na.wav,rock\na.wav,pop\n", "t.csv: line 3: duplicate path 'a.wav' (first at line 2)"),
    ("path,label,track_id\na.wav,rock,x1\n", "t.csv: line 2: track_id 'x1' is not a non-negative integer"),
    ("path,label\na.wav,\n", "t.csv: line 2: empty label"),
    ("path,label\n", "t.csv: no rows"),
]


@pytest.mark.parametrize("text, message", BAD_TABLES, ids=[m.split(": ", 1)[-1][:30] for _, m in BAD_TABLES])
def test_a_bad_table_is_one_line_naming_the_file_and_line(tmp_path, cli_error, text, message):
    (tmp_path / "t.csv").write_text(text)
    line = cli_error("build", "--corpus", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"))
    assert message in line and str(tmp_path / "t.csv") in line, line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_jsonl_and_inputs_are_one_line(tmp_path, cli_error):
    (tmp_path / "t.jsonl").write_text('{"path": "a.wav", "label": "x"}\n[1, 2]\n')
    assert "t.jsonl: line 2: expected a JSON object per line" in cli_error(
        "build", "--corpus", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"))
    (tmp_path / "t.xlsx").write_text("")
    assert "unknown table type '.xlsx'" in cli_error("build", "--corpus", str(tmp_path / "t.xlsx"), "--out",
                                                     str(tmp_path / "o"))
    assert "give either --fma-dir" in cli_error("build", "--out", str(tmp_path / "o"))
    assert "split_ratios" in cli_error("build", "--corpus", str(tmp_path), "--split-ratios", "80,20", "--out",
                                       str(tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    assert "no audio files in class folders" in cli_error("build", "--corpus", str(tmp_path / "empty"), "--out",
                                                          str(tmp_path / "o"))


def test_tsv_and_jsonl_tables_read_like_csv(tmp_path):
    rows = [{"path": f"{i}.wav", "label": "ab"[i % 2], "track_id": 100 + i} for i in range(4)]
    a = load_corpus(write_table(tmp_path / "t.tsv", rows), parse_ratios("1,1,1"))
    b = load_corpus(write_table(tmp_path / "t.jsonl", rows), parse_ratios("1,1,1"))
    assert a.tracks == b.tracks and a.vocabulary == ["a", "b"]
    assert sorted(t.track_id for refs in a.tracks.values() for t in refs) == [100, 101, 102, 103]
