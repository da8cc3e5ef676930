"""shard_tools.demo_corpus: FMA's layout, varied formats, the special tracks, determinism, the CLI."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from shard_tools.demo_corpus import (
    GENRE_NAMES,
    TIMBRES,
    metadata_rows,
    plan_demo_tracks,
    render_clip,
    write_genres_csv,
    write_track_audio,
    write_tracks_csv,
)
from shard_tools.fma_metadata import audio_path


@pytest.fixture(scope="module")
def planned():
    """The corpus plan behind the session's demo corpus (same arguments)."""
    return plan_demo_tracks(genres=4, tracks_per_genre=10, seed=0)


def test_files_follow_fmas_layout(demo_corpus, planned):
    files = sorted(p.relative_to(demo_corpus).as_posix() for p in demo_corpus.rglob("*") if p.is_file())
    mp3s = [f for f in files if f.endswith(".mp3")]
    assert set(files) - set(mp3s) == {"fma_metadata/tracks.csv", "fma_metadata/genres.csv"}
    assert all(re.fullmatch(r"fma_small/(\d{3})/\1\d{3}\.mp3", f) for f in mp3s), mp3s
    small = [t for t in planned if t.subset == "small"]
    assert mp3s == sorted(audio_path("", "small", t.track_id).as_posix() for t in small)
    assert not (demo_corpus / "fma_medium").exists()  # like a download of fma_small only


def test_track_ids_are_fma_like(planned):
    ids = [t.track_id for t in planned]
    assert ids[0] == 2 and ids == sorted(set(ids))
    assert len(set(np.diff(ids[:-2]))) > 5  # irregular steps
    assert {98565, 99134} <= set(ids)


def test_splits_are_80_10_10_per_genre(demo_summary):
    assert demo_summary.counts == {g: {"training": 8, "validation": 1, "test": 1} for g in GENRE_NAMES[:4]}


def test_sample_rates_and_channels_vary(demo_corpus, demo_summary, planned):
    infos = {t.track_id: sf.info(str(audio_path(demo_corpus, "small", t.track_id)))
             for t in planned if t.subset == "small" and t.track_id != demo_summary.broken_track_id}
    formats = Counter((info.samplerate, info.channels) for info in infos.values())
    assert set(formats) == {(44100, 2), (48000, 2), (22050, 1)}
    assert formats[44100, 2] > sum(formats.values()) / 2  # mostly 44.1 kHz stereo, like FMA
    assert formats == Counter(demo_summary.formats)


def test_clips_are_30_seconds(demo_corpus, planned):
    clip = next(t for t in planned if t.sample_rate == 48000)
    info = sf.info(str(audio_path(demo_corpus, "small", clip.track_id)))
    assert info.frames == 30 * 48000


def test_short_track_decodes_to_under_27_5_s(demo_corpus, demo_summary):
    data, rate = sf.read(str(audio_path(demo_corpus, "small", demo_summary.short_track_id)))
    assert 7.0 < len(data) / rate < 27.5


def test_broken_track_does_not_decode(demo_corpus, demo_summary):
    path = audio_path(demo_corpus, "small", demo_summary.broken_track_id)
    assert 0 < path.stat().st_size < 100
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))


def test_special_tracks_have_a_genre_in_small_training(planned):
    special = {t.track_id: t for t in planned if t.track_id in (98565, 99134)}
    assert all(t.genre and t.subset == "small" and t.split == "training" for t in special.values())
    assert special[98565].seconds == 8.0 and special[99134].seconds == 0.0


def test_same_seed_same_bytes(demo_corpus, planned, tmp_path):
    rows = metadata_rows(planned, seed=0)
    write_tracks_csv(planned, rows, tmp_path / "tracks.csv")
    write_genres_csv(rows, tmp_path / "genres.csv")
    for name in ("tracks.csv", "genres.csv"):
        assert (tmp_path / name).read_bytes() == (demo_corpus / "fma_metadata" / name).read_bytes()
    picks = [planned[0], next(t for t in planned if t.channels == 1), next(t for t in planned if t.seconds == 8.0)]
    for track in picks:
        write_track_audio(track, tmp_path, seed=0)
        again = audio_path(tmp_path, "small", track.track_id).read_bytes()
        assert again == audio_path(demo_corpus, "small", track.track_id).read_bytes()


def test_other_seed_other_corpus(planned):
    other = plan_demo_tracks(genres=4, tracks_per_genre=10, seed=1)
    assert [t.track_id for t in other] != [t.track_id for t in planned]
    assert not np.array_equal(render_clip(planned[0], seed=0), render_clip(planned[0], seed=1))


def dominant_hz(track) -> float:
    """The strongest frequency of a 4 s rendering of a track's family (the same recipe, shorter)."""
    wave = render_clip(replace(track, seconds=4.0), seed=0)[:, 0]
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    freqs = np.fft.rfftfreq(wave.size, 1 / track.sample_rate)
    band = (freqs > 60) & (freqs < 4000)
    return float(freqs[band][np.argmax(spectrum[band])])


def test_genre_is_audible_in_the_waveform():
    """Every genre's pitch stays in its own band (base -1 .. +4 semitones), bands do not overlap."""
    tracks = [t for t in plan_demo_tracks(genres=8, tracks_per_genre=10, seed=3)
              if t.genre and t.seconds == 30.0]
    for genre in GENRE_NAMES:
        base = TIMBRES[genre].base_hz
        for track in [t for t in tracks if t.genre == genre][:2]:
            assert base * 2 ** (-1.05 / 12) < dominant_hz(track) < base * 2 ** (4.05 / 12), genre
    bases = sorted(timbre.base_hz for timbre in TIMBRES.values())
    assert all(hi / lo > 2 ** (5 / 12) for lo, hi in zip(bases, bases[1:]))


def test_summary_format_names_genres_and_special_tracks(demo_summary):
    text = demo_summary.format()
    assert all(genre in text for genre in GENRE_NAMES[:4])
    assert "098565" in text and "099134" in text and "44100 Hz stereo" in text
    assert demo_summary.total_bytes == sum(p.stat().st_size for p in demo_summary.out_dir.rglob("*")
                                           if p.is_file())


@pytest.mark.parametrize("args, expected", [
    (["--genres", "9"], "genres must be between 1 and 8, got 9"),
    (["--tracks-per-genre", "9"], "tracks_per_genre must be at least 10"),
    (["--seed", "-1"], "seed must be >= 0"),
    (["--tracks-per-genre", "100000000000000000000"], "tracks_per_genre must be at most 1000"),
    (["--genres", "100000000000000000000"], "genres must be between 1 and 8"),
])
def test_demo_data_rejects_bad_arguments(args, expected, tmp_path, cli_error):
    assert expected in cli_error("demo-data", tmp_path / "corpus", *args)
    assert not (tmp_path / "corpus").exists()


def test_demo_data_refuses_a_folder_in_use(tmp_path, cli_error):
    (tmp_path / "notes.txt").write_text("mine")
    message = cli_error("demo-data", tmp_path)
    assert str(tmp_path) in message and "not empty" in message
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
