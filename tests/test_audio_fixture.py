"""The real FMA clip (track 2) and a demo clip decode to the exact lengths we rely on, with soundfile."""
from __future__ import annotations

import soundfile as sf

from shard_tools.fma_metadata import audio_path

FMA_CLIP_FRAMES = 1_321_967  # checked with libsndfile/mpg123 and FFmpeg 5.1 (fixtures README)


def test_real_fma_clip_header(fixture_mp3):
    info = sf.info(str(fixture_mp3))
    assert (info.samplerate, info.channels, info.frames) == (44_100, 2, FMA_CLIP_FRAMES)
    assert fixture_mp3.stat().st_size == 960_738
    assert fixture_mp3.relative_to(fixture_mp3.parents[2]) == audio_path("", "small", 2)


def test_real_fma_clip_decodes_to_exact_length(fixture_mp3):
    data, rate = sf.read(str(fixture_mp3), dtype="int16")
    assert rate == 44_100 and data.shape == (FMA_CLIP_FRAMES, 2)
    assert abs(data).max() > 1000  # music, not silence


def test_demo_clip_decodes_to_exactly_30_seconds(demo_corpus, demo_summary):
    path = audio_path(demo_corpus, "small", 2)
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate in (22_050, 44_100, 48_000) and data.shape[0] == 30 * rate
    assert 0.05 < abs(data).max() <= 1.0
