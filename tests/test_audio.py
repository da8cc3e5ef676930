"""shard_tools.audio: decode at the file's own rate/channels, mono, soxr, fixed length, skips."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from shard_tools.audio import ClipSettings, TrackSkipped, TrackTask, decode_track, fix_length, process_track

FIXTURE_MP3 = Path("/work/shared/fixtures/fma_small/000/000002.mp3")
SETTINGS = ClipSettings(sample_rate=22050, clip_samples=661500, min_seconds=27.5)


def write_wav(path: Path, sample_rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = (0.5 * rng.uniform(-1, 1, (round(sample_rate * seconds), channels))).astype(np.float32)
    sf.write(path, data, sample_rate, subtype="FLOAT")
    return data


def reference(data: np.ndarray, sample_rate: int, target: int, clip_samples: int) -> tuple[np.ndarray, int]:
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sample_rate != target:
        mono = soxr.resample(np.ascontiguousarray(mono), sample_rate, target, quality="HQ")
    clip = np.zeros(clip_samples, np.float32)
    clip[: min(len(mono), clip_samples)] = mono[:clip_samples]
    return clip, len(mono)


@pytest.mark.parametrize("sample_rate,channels,seconds", [
    (48000, 2, 2.5), (22050, 1, 2.0), (44100, 2, 3.5), (32000, 1, 1.0), (16000, 6, 2.0)])
def test_decode_uses_file_rate_and_channels(tmp_path, sample_rate, channels, seconds):
    data = write_wav(tmp_path / "x.wav", sample_rate, channels, seconds)
    settings = ClipSettings(22050, 66150, min_seconds=0.5)  # a 3 s clip: some inputs are cut, some padded
    track = decode_track(tmp_path / "x.wav", settings)
    want, true_len = reference(data, sample_rate, 22050, 66150)
    assert (track.source_sample_rate, track.source_channels) == (sample_rate, channels)
    assert track.source_frames == len(data)
    assert track.num_samples == true_len == pytest.approx(seconds * 22050, abs=2)
    assert track.clip.dtype == np.float32 and track.clip.shape == (66150,)
    np.testing.assert_array_equal(track.clip, want)
    if true_len < 66150:
        assert not track.clip[true_len:].any()  # zero-padded at the end


def test_same_rate_is_not_resampled(tmp_path):
    data = write_wav(tmp_path / "x.wav", 22050, 1, 1.0)
    track = decode_track(tmp_path / "x.wav", ClipSettings(22050, 22050, 0.5))
    np.testing.assert_array_equal(track.clip, data[:, 0])


def test_fixture_mp3_facts():
    track = decode_track(FIXTURE_MP3, SETTINGS)
    assert (track.source_sample_rate, track.source_channels, track.source_frames) == (44100, 2, 1321967)
    assert track.num_samples == 660984  # 1,321,967 frames at 44.1 kHz -> 22.05 kHz
    assert track.clip.shape == (661500,) and not track.clip[660984:].any()


def test_too_short_and_undecodable_are_skip_reasons(tmp_path):
    write_wav(tmp_path / "short.wav", 44100, 2, 8.01)
    with pytest.raises(TrackSkipped, match=r"^too short: 8\.01 s < 27\.5 s$"):
        decode_track(tmp_path / "short.wav", SETTINGS)
    (tmp_path / "bad.mp3").write_bytes(b"\xff\xfb" + bytes(300))
    with pytest.raises(TrackSkipped, match=r"^unreadable audio \(.*Illegal Audio-MPEG-Header") as exc:
        decode_track(tmp_path / "bad.mp3", SETTINGS)
    assert "does not exist" not in str(exc.value) and "pipe" not in str(exc.value)
    with pytest.raises(TrackSkipped, match=r"^missing audio file$"):
        decode_track(tmp_path / "missing.mp3", SETTINGS)


def test_decoder_messages_stay_off_the_terminal(tmp_path, capfd):
    (tmp_path / "bad.mp3").write_bytes(b"\xff\xfb" + bytes(300))
    result = process_track(TrackTask(1, "Rock", 3, str(tmp_path / "bad.mp3"), SETTINGS))
    assert "Illegal Audio-MPEG-Header" in result.reason
    assert capfd.readouterr().err == ""


def test_process_track_never_raises(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    result = process_track(TrackTask(99134, "Rock", 3, str(tmp_path / "empty.mp3"), SETTINGS))
    assert result.skipped and result.reason == "empty file" and result.payload is None


def test_process_track_result(tmp_path):
    write_wav(tmp_path / "x.wav", 48000, 2, 2.0)
    settings = ClipSettings(22050, 44100, 1.5)
    result = process_track(TrackTask(7, "Folk", 2, str(tmp_path / "x.wav"), settings))
    assert not result.skipped
    assert result.meta == {"track_id": 7, "genre": "Folk", "label": 2, "sample_rate": 22050, "num_samples": 44100,
                           "source_sample_rate": 48000, "source_channels": 2, "source_duration": 2.0,
                           "source_bytes": (tmp_path / "x.wav").stat().st_size}
    assert len(result.payload) == 44100 * 2 and result.crc32 == zlib.crc32(result.payload)


def test_fix_length():
    x = np.arange(5, dtype=np.float32)
    assert fix_length(x, 3).tolist() == [0, 1, 2]
    assert fix_length(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert fix_length(x, 7).dtype == np.float32


def test_to_mono_is_the_float32_mean_of_the_channels_bit_for_bit():
    from shard_tools.audio import to_mono

    rng = np.random.default_rng(3)
    for channels in (1, 2, 3, 6):
        data = rng.uniform(-1, 1, (10_001, channels)).astype(np.float32)
        assert np.array_equal(to_mono(data), data.mean(axis=1, dtype=np.float32)), channels
