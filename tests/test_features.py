"""Log-mel features on the device: batched over all windows they equal torchaudio's reference transform
applied window by window; their shapes follow from the window length; they come after the augmentations."""
from __future__ import annotations

import pytest
import torch
import torchaudio

from fmashard.data.device import DeviceFeeder
from fmashard.data.features import FEATURES, LogMel, Waveform, feature_shape, make_features
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.transforms import RandomGain
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from synth_shards import write_synthetic_shards

CPU = torch.device("cpu")
WINDOW = WindowSpec(window=11_025, overlap=0.5, count=3)   # 0.5-s windows: 22 frames


def reference() -> torch.nn.Module:
    """torchaudio's transforms with the documented settings, written out here independently."""
    return torch.nn.Sequential(
        torchaudio.transforms.MelSpectrogram(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128,
                                             norm="slaney", mel_scale="slaney"),
        torchaudio.transforms.AmplitudeToDB("power", top_db=None))


@pytest.fixture(scope="module")
def host_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(root, [3, 2], clip_samples=24_000)
    return list(ShardLoader(resolve_source(root), LoaderConfig(batch_size=3, shuffle=False, prefetch=0)))


@pytest.mark.parametrize("window", [11_025, 22_050])
def test_batched_logmel_equals_the_reference_window_by_window(window):
    generator = torch.Generator().manual_seed(0)
    levels = torch.logspace(-4, 0, 6).view(-1, 1, 1)        # -80 dB to full scale: the floor is reached too
    windows = torch.randn(6, 1, window, generator=generator) * levels
    windows[0] = 0.0                                           # silence: the -100 dB floor
    got = LogMel()(windows)
    ref = reference()
    want = torch.stack([ref(windows[i]) for i in range(len(windows))])
    assert got.shape == (6, *feature_shape("logmel", window)) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert torch.all(got[0] == -100.0) and got[-1].max() > 0


def test_device_feeder_turns_every_window_into_its_log_mel(host_batches):
    plain = list(DeviceFeeder(host_batches, CPU, WINDOW))
    features = list(DeviceFeeder(host_batches, CPU, WINDOW, features=make_features("logmel")))
    ref = reference()
    assert len(plain) == len(features) == 2
    for p, f in zip(plain, features):
        assert f.windows.shape == (p.windows.shape[0], 1, 128, 22) == (p.windows.shape[0], *feature_shape("logmel",
                                                                                                           WINDOW.window))
        assert torch.equal(p.labels, f.labels) and torch.equal(p.track_ids, f.track_ids)
        want = torch.stack([ref(w) for w in p.windows])
        torch.testing.assert_close(f.windows, want, rtol=1e-5, atol=1e-4)


def test_features_come_after_the_augmentations(host_batches):
    """A gain of g dB on the waveform shifts every log-mel bin by g dB: the features saw the gained windows."""
    logmel = make_features("logmel")
    plain = list(DeviceFeeder(host_batches, CPU, WINDOW, features=logmel))
    gained = list(DeviceFeeder(host_batches, CPU, WINDOW, seed=2, window_transforms=[RandomGain(6)], features=logmel))
    for p, g in zip(plain, gained):
        shift = (g.windows - p.windows).reshape(p.num_tracks, -1)
        assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=2e-3)   # one shift per track
        assert shift[:, 0].abs().max() <= 6.001 and shift[:, 0].abs().max() > 0.1


def test_a_tone_peaks_in_its_mel_band():
    t = torch.arange(22_050) / 22_050
    tone = torch.sin(2 * torch.pi * 1_000 * t).view(1, 1, -1)
    logmel = LogMel()
    band = int(logmel(tone)[0, 0].mean(dim=1).argmax())
    fft_bin = round(1_000 * 2048 / 22_050)
    assert band == int(logmel.mel.mel_scale.fb[fft_bin].argmax())


def test_log_mel_is_float32_under_autocast():
    windows = torch.randn(4, 1, 4_096, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = LogMel()(windows)
    assert got.dtype == torch.float32 and torch.equal(got, LogMel()(windows))


@pytest.mark.parametrize("window, frames", [(1_025, 3), (7_680, 16), (110_250, 216), (220_500, 431)])
def test_shapes_follow_from_the_window(window, frames):
    assert feature_shape("logmel", window) == (1, 128, frames)
    assert LogMel()(torch.zeros(2, 1, window)).shape == (2, 1, 128, frames)
    assert feature_shape("wave", window) == (1, window)
    assert torch.equal(Waveform()(torch.ones(2, 1, window)), torch.ones(2, 1, window))


def test_registry_and_its_errors():
    assert list(FEATURES) == ["wave", "logmel"]
    assert isinstance(make_features("wave"), Waveform) and isinstance(make_features("logmel", 16_000), LogMel)
    with pytest.raises(UserError, match="^unknown features 'mfcc'; choose one of: wave, logmel$"):
        make_features("mfcc")
    with pytest.raises(ValueError, match="more than 1024 samples"):
        feature_shape("logmel", 1_024)
