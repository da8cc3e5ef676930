"""`--long-tracks all`: whole tracks cut into clips, each clip one fixed-size record keyed
{track_id:06d}_{clip:04d}; the samples equal an independent decode at each clip's offset; clips never cross
shards or splits; the loader does not put one track's clips together more than chance; evaluation counts
each track once."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.format.tar import clip_of, track_id_of
from shard_tools.audio import ClipSettings, clip_starts
from shard_tools.build import BuildConfig, build_shards
from shard_tools.verify import verify_build
from tests.test_corpus import write_audio, write_table


def test_clip_starts():
    s = ClipSettings(10, 30, min_seconds=1.0, long_tracks="all")         # 3 s clips at 10 Hz, keep >= 1 s
    assert clip_starts(90, s) == [0, 30, 60]                               # exactly three clips
    assert clip_starts(100, s) == [0, 30, 60, 90]                          # + a 1.0 s partial clip (padded)
    assert clip_starts(99, s) == [0, 30, 60]                               # 0.9 s left over: dropped
    assert clip_starts(20, s) == [0]                                       # shorter than a clip: one, padded
    overlap = ClipSettings(10, 30, 1.0, long_tracks="all", hop_samples=15)
    assert clip_starts(90, overlap) == [0, 15, 30, 45, 60]                 # the last whole clip ends the track
    assert clip_starts(100, overlap) == [0, 15, 30, 45, 60, 75]            # 10 samples left: a 25-sample clip
    assert clip_starts(100, ClipSettings(10, 30, 1.0)) == [0]              # "first"


def independent_clips(path: Path, clip: int, rate: int = 22050) -> list[np.ndarray]:
    """The test's own decode: soundfile, mean of channels, soxr HQ, then int16 as the pcm16 codec stores it."""
    data, source_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1, dtype=np.float32)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate, quality="HQ")
    cuts = []
    for start in range(0, len(mono), clip):
        part = mono[start : start + clip]
        part = np.concatenate([part, np.zeros(clip - len(part), np.float32)])
        cuts.append(np.clip(np.round(part * 32768), -32768, 32767).astype("<i2"))
    return cuts


def shard_samples(out: Path) -> dict[str, tuple[dict, np.ndarray, str]]:
    """key -> (.json, int16 audio, shard path), read with Python's tarfile (no fmashard reader)."""
    samples = {}
    for tar_path in sorted(out.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            key, ext = name.split(".", 1)
            if ext == "json":
                samples[key] = (json.loads(data), np.frombuffer(members[f"{key}.pcm"], "<i2"),
                                tar_path.relative_to(out).as_posix())
    return samples


@pytest.fixture(scope="module")
def long_build(tmp_path_factory):
    """A 3-minute stereo MP3 at 44.1 kHz (test split) among short tracks; 30-s clips, final clips >= 10 s."""
    root = tmp_path_factory.mktemp("long")
    write_audio(root / "long.mp3", 180.0, seed=1, rate=44100, channels=2)
    write_audio(root / "tail.ogg", 75.0, seed=2, rate=44100)     # 2 clips + a 15 s partial clip
    rows = [{"path": "long.mp3", "label": "a", "split": "test"}, {"path": "tail.ogg", "label": "b", "split": "test"}]
    for i in range(4):
        write_audio(root / f"s{i}.wav", 31.0, seed=10 + i)
        rows.append({"path": f"s{i}.wav", "label": "ab"[i % 2], "split": "training" if i < 3 else "validation"})
    table = write_table(root / "tracks.csv", rows)
    out = root / "shards"
    report = build_shards(BuildConfig(corpus=str(table), out=str(out), long_tracks="all", min_seconds=10.0,
                                      shard_size="8MB", workers=2))
    return root, out, report


def test_a_three_minute_track_becomes_six_clips_equal_to_an_independent_decode(long_build):
    root, out, report = long_build
    samples = shard_samples(out)
    long_id = 0   # ids are the sorted paths: long.mp3, s0..s3.wav, tail.ogg
    keys = sorted(k for k in samples if track_id_of(k) == long_id)
    assert keys == [f"000000_{c:04d}" for c in range(6)]
    expected = independent_clips(root / "long.mp3", 661500)
    assert len(expected) == 6
    for key in keys:
        meta, audio, _ = samples[key]
        c = clip_of(key)
        assert (meta["track_id"], meta["clip"], meta["clips"], meta["start"]) == (0, c, 6, 30.0 * c)
        assert np.array_equal(audio, expected[c]), key
    tail = sorted(k for k in samples if track_id_of(k) == 5)
    assert len(tail) == 3 and samples[tail[-1]][0]["start"] == 60.0
    assert np.array_equal(samples[tail[-1]][1], independent_clips(root / "tail.ogg", 661500)[2])  # zero-padded
    assert report.tracks_written == 6 and report.clips_written == 6 + 3 + 4 * 1
    assert verify_build(str(out)).ok


def test_clips_of_a_track_stay_in_one_shard_and_split(long_build):
    _, out, _ = long_build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["test"]["num_tracks"] == 2 and manifest["splits"]["test"]["num_samples"] == 9
    shard_of = {}
    for key, (_, _, shard) in shard_samples(out).items():
        assert shard_of.setdefault(track_id_of(key), shard) == shard


def test_evaluation_counts_the_long_track_once(long_build, tmp_path):
    from fmashard.data.windows import WindowSpec
    from fmashard.train.evaluate import EvaluateConfig, evaluate_checkpoint
    from tests.test_checkpoint import write_untrained_checkpoint

    _, out, _ = long_build
    write_untrained_checkpoint(tmp_path / "best.pt", out, WindowSpec(window=2205, count=2))
    report = evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path / "best.pt"), shards=str(out), split="test"))
    m = report.metrics
    assert (m.tracks, m.clips, m.windows) == (2, 9, 18)
    assert sum(map(sum, m.confusion)) == 2
    confusion = json.loads((tmp_path / "confusion_test.json").read_text())
    assert (confusion["tracks"], confusion["clips"]) == (2, 9)
    assert "2 tracks, 9 clips" in report.summary()


# ------------------------------------------------------------------------------ clips in training batches
@pytest.fixture(scope="module")
def many_clips(tmp_path_factory):
    """12 tracks of 4 s cut into 0.5-s clips (8 each): 96 records over 5 shards."""
    root = tmp_path_factory.mktemp("clips")
    rows = []
    for i in range(12):
        write_audio(root / f"t{i:02d}.wav", 4.0, seed=i)
        rows.append({"path": f"t{i:02d}.wav", "label": "ab"[i % 2], "split": "training"})
    out = root / "shards"
    build_shards(BuildConfig(corpus=str(write_table(root / "t.csv", rows)), out=str(out), long_tracks="all",
                             clip_seconds=0.5, min_seconds=0.25, shard_size="450KB", workers=1))
    return out


def test_clips_of_one_track_share_a_batch_no_more_than_chance(many_clips):
    """Chance, under the loader's shuffle (shards in a random order, then a scatter buffer), is how often
    two records of one shard share a batch.  The build writes a shard's clips in a seeded random order,
    so two clips of one track must share a batch as often as any two records of their shard would if the
    records were exchangeable: observed same-track pairs ~ sum over same-shard pairs of P(same track)."""
    samples = shard_samples(many_clips)
    shard_of_track = {track_id_of(key): shard for key, (_, _, shard) in samples.items()}
    clips = Counter(track_id_of(key) for key in samples)
    per_shard = Counter(shard_of_track[t] for t in clips.elements())
    assert len(per_shard) >= 4 and set(clips.values()) == {8}
    # P(two distinct records of a shard belong to one track)
    p_same = {shard: sum(k * (k - 1) for t, k in clips.items() if shard_of_track[t] == shard) / (n * (n - 1))
              for shard, n in per_shard.items()}
    spec = resolve_source(many_clips)
    observed, expected, consecutive = 0, 0.0, 0
    for epoch in range(40):
        loader = ShardLoader(spec, LoaderConfig(batch_size=8, shuffle_buffer=32, seed=epoch, prefetch=0))
        for batch in loader:
            ids = batch.track_ids.tolist()
            for a, b in combinations(ids, 2):
                observed += a == b
                if shard_of_track[a] == shard_of_track[b]:
                    expected += p_same[shard_of_track[a]]
    assert expected > 100
    assert 0.75 * expected < observed < 1.25 * expected, (observed, expected)
    # and the order in the shard is not the tracks one after another
    for shard in per_shard:
        with tarfile.open(many_clips / shard) as tar:
            order = [track_id_of(m.name.split(".")[0]) for m in tar.getmembers() if m.name.endswith(".pcm")]
        consecutive += sum(x == y for x, y in zip(order, order[1:]))
    assert consecutive < 0.4 * sum(per_shard.values()), consecutive   # one after another: 7 of every 8
