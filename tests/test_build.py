"""`fmashard build` on the demo corpus: sample bytes against an independent decode, manifest, worker-count
determinism, kill -9 + resume, DALI .idx, refusal, bad inputs, --layout files, s3 code path."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from fmashard.cli import main
from fmashard.format.tar import record_bytes
from shard_tools.build import BuildConfig, ConfigError, build_shards
from shard_tools.build_plan import plan_shards
from shard_tools.fma_metadata import audio_path, load_selection

RECORD = record_bytes(661500 * 2)
SHARD_SIZE = str(4 * RECORD + 1024)  # 4 records per shard: several shards per split
SHORT, BROKEN = 98565, 99134
WDS2IDX = shutil.which("wds2idx") or str(Path(sys.executable).parent / "wds2idx")


# ----------------------------------------------------------------------------- shared outputs
def build_once(tmp_path_factory, fma_dir: Path, **kwargs) -> Path:
    """Build into basetemp/<args hash> unless a previous test (any module) already did."""
    args = {"shard_size": SHARD_SIZE, "workers": 2, **kwargs}
    tag = hashlib.sha256(json.dumps([str(fma_dir), args], sort_keys=True).encode()).hexdigest()[:12]
    out = tmp_path_factory.getbasetemp() / f"fmashard-build-{tag}"
    if not (out / "manifest.json").exists():
        build_shards(BuildConfig(fma_dir=fma_dir, out=out, **args))
    return out


@pytest.fixture(scope="module")
def fma_dir(demo_corpus) -> Path:
    return Path(demo_corpus)  # tests/conftest.py: 4 genres x 10 tracks, with 098565 (short) and 099134 (broken)


@pytest.fixture(scope="module")
def base(tmp_path_factory, fma_dir):
    return build_once(tmp_path_factory, fma_dir)


@pytest.fixture(scope="module")
def mini_fma(tmp_path_factory, fma_dir):
    """The demo corpus cut to 2 tracks per split plus the broken one (tracks.csv rows only; audio linked)."""
    out = tmp_path_factory.mktemp("mini-fma")
    with open(fma_dir / "fma_metadata" / "tracks.csv", newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[:3], rows[3:]
    col = {key: i for i, key in enumerate(zip(rows[0], rows[1]))}
    keep, per_split = [], {}
    for row in body:
        split, subset, genre = row[col["set", "split"]], row[col["set", "subset"]], row[col["track", "genre_top"]]
        if subset == "small" and genre and int(row[0]) != SHORT and per_split.get(split, 0) < 2:
            keep.append(row)
            per_split[split] = per_split.get(split, 0) + 1
    keep += [row for row in body if int(row[0]) == BROKEN]
    (out / "fma_metadata").mkdir()
    with open(out / "fma_metadata" / "tracks.csv", "w", newline="") as f:
        csv.writer(f).writerows(head + keep)
    (out / "fma_small").symlink_to(fma_dir / "fma_small")
    return out


_REFERENCE: dict = {}


def reference_clip(fma_dir: Path, track_id: int) -> tuple[np.ndarray, int]:
    """Decode + mono + resample + fix length written out independently of shard_tools.audio."""
    path = audio_path(fma_dir, "small", track_id).resolve()
    if path not in _REFERENCE:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0].copy()
        if rate != 22050:
            mono = soxr.resample(mono, rate, 22050, quality="HQ")
        clip = np.zeros(661500, np.float32)
        clip[: min(len(mono), 661500)] = mono[:661500]
        _REFERENCE[path] = (clip, len(mono))
    return _REFERENCE[path]


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.glob("*/*")) if p.suffix in (".tar", ".idx")}


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fmashard", *map(str, args)])
    code = 0  # a command that succeeds may simply return
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------- config and plan
@pytest.mark.parametrize("field,kwargs", [
    ("codec", {"codec": "mp3"}), ("layout", {"layout": "folders"}), ("workers", {"workers": 0}),
    ("shard_size", {"shard_size": 0}), ("shard_size", {"shard_size": "big"}), ("sample_rate", {"sample_rate": 0}),
    ("clip_seconds", {"clip_seconds": 0}), ("min_seconds", {"min_seconds": 31}), ("min_seconds", {"min_seconds": -1}),
    ("seed", {"seed": -1})])
def test_config_rejects_bad_fields(field, kwargs):
    with pytest.raises(ConfigError, match=f"^{field}") as exc:
        BuildConfig(fma_dir="fma", out="out", **kwargs)
    assert isinstance(exc.value, ValueError)


def test_config_derived_layout():
    config = BuildConfig(fma_dir="fma", out="out", shard_size="256MB", workers=None)
    assert (config.clip_samples, config.sample_bytes, config.record_bytes) == (661500, 1323000, 1325568)
    assert config.samples_per_shard == (268435456 - 1024) // 1325568 and config.workers >= 1
    assert BuildConfig(fma_dir="fma", out="out", shard_size=100).samples_per_shard == 1


def test_plan_is_fixed_before_decoding(fma_dir):
    tracks = load_selection(fma_dir, "small").tracks
    plans = plan_shards(tracks, 4, seed=0)
    assert plans == plan_shards(tracks, 4, seed=0) and plans != plan_shards(tracks, 4, seed=1)
    for split, refs in tracks.items():
        mine = [p for p in plans if p.split == split]
        assert [p.index for p in mine] == list(range(len(mine))) and all(len(p.tracks) <= 4 for p in mine)
        assert sorted(t.track_id for p in mine for t in p.tracks) == [t.track_id for t in refs]
    assert len({t.genre for t in plans[0].tracks}) > 1  # shuffled: a shard mixes genres


# ----------------------------------------------------------------------------- the build itself
def test_samples_equal_independent_decode(base, fma_dir):
    manifest = json.loads((base / "manifest.json").read_text())
    vocabulary, seen = manifest["vocabulary"], 0
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert 1 <= shard["num_samples"] <= 4
            with tarfile.open(base / shard["path"]) as tar:
                members = tar.getmembers()
                assert len(members) == 3 * shard["num_samples"]
                for i in range(0, len(members), 3):
                    cls, meta, pcm = (tar.extractfile(m).read() for m in members[i : i + 3])
                    assert members[i].offset == i // 3 * RECORD
                    info = json.loads(meta)
                    clip, true_len = reference_clip(fma_dir, info["track_id"])
                    expected = np.clip(np.round(clip * 32768), -32768, 32767).astype("<i2")
                    np.testing.assert_array_equal(np.frombuffer(pcm, "<i2"), expected)
                    assert members[i + 2].name == f"{info['track_id']:06d}.pcm"
                    assert int(cls) == info["label"] and vocabulary[info["label"]] == info["genre"]
                    assert info["num_samples"] == true_len and info["sample_rate"] == 22050
                    assert set(info) == {"track_id", "genre", "label", "sample_rate", "num_samples",
                                         "source_sample_rate", "source_channels", "source_duration",
                                         "source_bytes"}
                    assert info["source_bytes"] == audio_path(fma_dir, "small", info["track_id"]).stat().st_size
                    seen += 1
    assert seen == manifest["totals"]["tracks_written"]


def test_manifest(base, fma_dir):
    manifest = json.loads((base / "manifest.json").read_text())
    selection = load_selection(fma_dir, "small")
    planned = sum(len(refs) for refs in selection.tracks.values())
    assert manifest["format"] == "fmashard" and manifest["format_version"] == 1 and manifest["layout"] == "shards"
    assert manifest["params"] == {"subset": "small", "sample_rate": 22050, "clip_seconds": 30.0,
                                  "min_seconds": 27.5, "codec": "pcm16", "shard_size": int(SHARD_SIZE), "seed": 0,
                                  "long_tracks": "first"}
    assert manifest["source"] == {"kind": "fma", "split_by": "fma", "split_ratios": None}
    assert (manifest["clip_samples"], manifest["record_bytes"], manifest["dtype"]) == (661500, RECORD, "int16")
    assert manifest["vocabulary"] == selection.vocabulary
    totals = manifest["totals"]
    assert totals["tracks_written"] + totals["tracks_skipped"] == planned
    assert totals["excluded_no_genre"] == selection.excluded_no_genre
    skipped = {s["track_id"]: s for s in manifest["skipped"]}
    assert set(skipped) == {SHORT, BROKEN} and totals["tracks_skipped"] == 2
    assert skipped[SHORT]["reason"].startswith("too short: ") and skipped[SHORT]["reason"].endswith(" s < 27.5 s")
    assert skipped[BROKEN]["reason"].startswith("unreadable audio (")
    assert skipped[BROKEN]["path"] == "fma_small/099/099134.mp3"
    total_bytes = 0
    for name, split in manifest["splits"].items():
        assert split["num_samples"] == sum(s["num_samples"] for s in split["shards"])
        assert len(split["shards"]) >= (2 if name == "training" else 1)
        for shard in split["shards"]:
            data = (base / shard["path"]).read_bytes()
            assert len(data) == shard["num_bytes"] == shard["num_samples"] * RECORD + 1024 <= int(SHARD_SIZE)
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert (base / shard["index"]).exists()
            total_bytes += len(data)
    assert totals["bytes"] == total_bytes
    assert not list(base.rglob("*.tmp-*"))


def test_idx_matches_tar_offsets_and_wds2idx(base, tmp_path):
    have_wds2idx = Path(WDS2IDX).exists()
    for tar_path in sorted(base.glob("*/*.tar")):
        idx = tar_path.with_suffix(".idx").read_text()
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
        lines = idx.splitlines()
        assert lines[0] == f"v1.2 {len(members) // 3}"
        for line, i in zip(lines[1:], range(0, len(members), 3)):
            want = " ".join(f"{m.name.split('.')[1]} {m.offset_data} {m.size} {m.name}" for m in members[i : i + 3])
            assert line == want
        if have_wds2idx:
            ref = tmp_path / f"{tar_path.stem}.idx"
            subprocess.run([WDS2IDX, str(tar_path), str(ref)], check=True, capture_output=True)
            assert ref.read_bytes() == tar_path.with_suffix(".idx").read_bytes(), tar_path.name
    if not have_wds2idx:
        pytest.skip("wds2idx (NVIDIA DALI's index tool) is not installed: compared with tarfile offsets only")


def test_one_and_two_workers_give_identical_output(base, tmp_path_factory, fma_dir):
    one = build_once(tmp_path_factory, fma_dir, workers=1)
    assert (one / "manifest.json").read_bytes() == (base / "manifest.json").read_bytes()
    assert shard_files(one) == shard_files(base)


def test_killed_build_resumes_to_the_same_bytes(base, fma_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fmashard", "build", "--fma-dir", str(fma_dir), "--out", str(out),
           "--workers", "1", "--shard-size", SHARD_SIZE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # kill as soon as one shard is complete (its journal record is written right after the tar)
    while not list(out.glob(".fmashard-journal/*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (out / "manifest.json").exists() and list(out.glob("*/*.tar"))
    (out / "training" / "training-000099.tar.tmp-12345").write_bytes(b"leftover of a killed run")

    report = build_shards(BuildConfig(fma_dir=fma_dir, out=out, workers=2, shard_size=SHARD_SIZE))
    planned = report.tracks_written + report.tracks_skipped
    print(f"resume after kill -9: kept {report.shards_kept} shards, decoded {report.tracks_decoded} of {planned}")
    assert report.shards_kept >= 1 and report.tracks_decoded < planned
    assert (out / "manifest.json").read_bytes() == (base / "manifest.json").read_bytes()
    assert shard_files(out) == shard_files(base)
    assert not list(out.rglob("*.tmp-*"))


def test_rerun_keeps_good_shards_and_rebuilds_a_damaged_one(base, fma_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(base, out)
    victim = out / "training" / "training-000001.tar"
    data = bytearray(victim.read_bytes())
    data[5000] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = build_shards(BuildConfig(fma_dir=fma_dir, out=out, workers=1, shard_size=SHARD_SIZE))
    assert report.shards_built == 1 and report.tracks_decoded <= 4
    assert shard_files(out) == shard_files(base)
    again = build_shards(BuildConfig(fma_dir=fma_dir, out=out, workers=1, shard_size=SHARD_SIZE))
    assert again.shards_built == 0 and again.tracks_decoded == 0
    assert (out / "manifest.json").read_bytes() == (base / "manifest.json").read_bytes()


# ----------------------------------------------------------------------------- refusals and bad input
def test_different_arguments_are_refused(base, fma_dir, monkeypatch, capsys):
    before = shard_files(base)
    code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", fma_dir, "--out", base,
                           "--shard-size", SHARD_SIZE, "--codec", "f16")
    assert code == 2
    assert_one_line_error(err, base, "--overwrite", "codec")
    assert shard_files(base) == before


def test_bad_inputs_are_one_line_errors(fma_dir, tmp_path, monkeypatch, capsys):
    def build(fma, out, *extra):
        code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", fma, "--out", out, *extra)
        assert code == 2, err
        return err

    assert_one_line_error(build(tmp_path / "nowhere", tmp_path / "o1"), tmp_path / "nowhere")
    assert not (tmp_path / "o1").exists()

    broken = tmp_path / "broken-fma"
    (broken / "fma_metadata").mkdir(parents=True)
    (broken / "fma_metadata" / "tracks.csv").write_text("this is not\nFMA's tracks.csv\n")
    assert_one_line_error(build(broken, tmp_path / "o2"), broken / "fma_metadata" / "tracks.csv")

    empty = tmp_path / "empty-fma"
    (empty / "fma_metadata").mkdir(parents=True)
    header = (fma_dir / "fma_metadata" / "tracks.csv").read_text().splitlines(keepends=True)[:3]
    (empty / "fma_metadata" / "tracks.csv").write_text("".join(header))
    assert_one_line_error(build(empty, tmp_path / "o3"), empty)

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert_one_line_error(build(fma_dir, a_file), a_file)
    assert_one_line_error(build(fma_dir, a_file / "out"), a_file / "out")
    assert_one_line_error(build(a_file, tmp_path / "o6"), a_file, "not a folder")

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    assert_one_line_error(build(fma_dir, foreign), foreign, "--overwrite")

    assert_one_line_error(build(fma_dir, tmp_path / "o4", "--codec", "mp3"), "codec")
    assert_one_line_error(build(fma_dir, tmp_path / "o5", "--shard-size", "huge"), "shard_size")


def test_unwritable_out_is_a_one_line_error(fma_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "blocker"          # a file where the output folder's parent should be
    blocker.write_text("not a folder")     # (works as root too, unlike a read-only folder)
    code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", fma_dir, "--out", blocker / "out")
    assert code == 2
    assert_one_line_error(err, blocker / "out")


# ----------------------------------------------------------------------------- other layouts and targets
def test_files_layout_overwrites_an_old_build(mini_fma, tmp_path, monkeypatch, capsys):
    import torch

    out = tmp_path / "files"
    (out / "training").mkdir(parents=True)
    (out / "training" / "training-000000.tar").write_bytes(b"stale shard")
    (out / "notes.txt").write_text("not ours")
    (out / ".fmashard-build.json").write_text(json.dumps({"build_id": "x", "params": {"codec": "f16"}}))
    (out / ".fmashard-journal").mkdir()
    (out / ".fmashard-journal" / "training-000000.json").write_text(json.dumps(
        {"build_id": "x", "path": "training/training-000000.tar", "index": "training/training-000000.idx"}))
    code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", mini_fma, "--out", out, "--layout", "files")
    assert code == 2
    assert_one_line_error(err, out, "--overwrite")
    code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", mini_fma, "--out", out, "--layout", "files",
                           "--overwrite")
    assert code == 2  # notes.txt is not ours: --overwrite refuses rather than delete around it
    assert_one_line_error(err, out / "notes.txt", "--overwrite")

    (out / "notes.txt").rename(tmp_path / "notes.txt")
    code, stdout, _ = run_cli(monkeypatch, capsys, "build", "--fma-dir", mini_fma, "--out", out, "--layout", "files",
                              "--overwrite", "--workers", "2")
    assert code == 0 and "6 tracks written, 1 skipped" in stdout
    assert not (out / "training" / "training-000000.tar").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "files" and manifest["dtype"] == "float32"
    assert [s["track_id"] for s in manifest["skipped"]] == [BROKEN]
    files = [f for split in manifest["splits"].values() for f in split["files"]]
    assert len(files) == 6 and manifest["totals"]["tracks_written"] == 6
    for entry in files:
        assert entry["path"] == f"{entry['path'].split('/')[0]}/{entry['track_id']:06d}.pt"
        tensor = torch.load(out / entry["path"])
        clip, true_len = reference_clip(mini_fma, entry["track_id"])
        assert tensor.dtype == torch.float32 and tensor.shape == (661500,)
        np.testing.assert_array_equal(tensor.numpy(), clip)
        assert entry["num_samples"] == true_len
    from shard_tools.verify import verify_build

    assert verify_build(out).ok
