"""mulaw8: the mu-law curve and its table, the error bound on a generated signal and on the real FMA clip,
and mulaw8 shards (the real writer, and `fmashard build --codec mulaw8`) read back through the loader and
the device stage (and DALI, when installed) as the table's floats."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from fmashard.data.device import DeviceFeeder
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.transforms import RandomCrop
from fmashard.data.windows import WindowSpec, make_windows
from fmashard.format.codecs import CODECS, MULAW_MU, mulaw8_error_bound
from fmashard.format.tar import record_bytes
from shard_tools.tar_writer import ShardWriter
from test_build import SHARD_SIZE, fma_dir, mini_fma, reference_clip, run_cli  # noqa: F401

MULAW8 = CODECS["mulaw8"]
TABLE = torch.tensor(MULAW8.table)
CPU = torch.device("cpu")
WINDOW = WindowSpec(window=1_000, overlap=0.25, count=3)   # hop 750, span 2,500
CLIP = 4_000


def round_trip(clip: np.ndarray) -> np.ndarray:
    raw = torch.frombuffer(bytearray(MULAW8.encode(clip)), dtype=torch.uint8)
    return MULAW8.decode(raw, torch.empty(len(clip))).numpy()


def snr_db(clip: np.ndarray, decoded: np.ndarray) -> float:
    clip = clip.astype(np.float64)
    return 10 * math.log10((clip ** 2).sum() / ((decoded - clip) ** 2).sum())


def assert_within_bound(clip: np.ndarray, decoded: np.ndarray) -> float:
    """Every sample within the mu-law bound (float32 rounding aside); returns the largest error / bound."""
    ratio = np.abs(decoded - clip) / (mulaw8_error_bound(clip) + 1e-7)
    assert ratio.max() <= 1.0
    return float(ratio.max())


# ----------------------------------------------------------------------------- the curve and its table
def test_table_is_the_mu_law_curve_on_255_symmetric_levels():
    table = MULAW8.table
    assert table.dtype == np.float32 and table.shape == (256,) and not table.flags.writeable
    assert table[128] == 0.0 and table[255] == 1.0 and table[1] == table[0] == -1.0
    assert np.all(np.diff(table[1:]) > 0)                              # strictly increasing over 1..255
    np.testing.assert_array_equal(table[129:], -table[127:0:-1])       # symmetric about 128
    y = (np.arange(1, 256) - 128) / 127
    np.testing.assert_allclose(table[1:], np.sign(y) * (256.0 ** np.abs(y) - 1) / MULAW_MU, rtol=1e-6, atol=1e-9)


def test_every_level_encodes_to_its_own_byte_and_silence_is_128():
    codes = np.frombuffer(MULAW8.encode(MULAW8.table[1:]), np.uint8)
    assert codes.tolist() == list(range(1, 256))
    assert np.frombuffer(MULAW8.encode(np.array([0.0, 2.0, -3.0], np.float32)), np.uint8).tolist() == [128, 255, 1]


def test_decode_is_one_gather_into_out_on_strided_views():
    """The device stage decodes a strided (B, W, L) window view of a (B, N) batch: table[value], in `out`."""
    audio = torch.randint(0, 256, (2, CLIP), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    view = audio.unfold(1, WINDOW.window, WINDOW.hop)[:, : WINDOW.count]
    out = torch.full((view.numel(),), float("nan"))
    got = MULAW8.decode(view, out)
    assert got.shape == view.shape and got.data_ptr() == out.data_ptr()
    assert torch.equal(got, TABLE[view.long()])


# ----------------------------------------------------------------------------- fidelity
def test_generated_signal_within_the_bound_at_every_level():
    """Tones and noise from -60 dBFS to full scale, exact silence and the extremes."""
    rng = np.random.default_rng(0)
    t = np.arange(5 * 22050) / 22050
    envelope = 10 ** np.linspace(-3, 0, t.size)                        # -60 dB .. 0 dB
    tones = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1375 * t) + 0.2 * rng.standard_normal(t.size)
    signal = np.concatenate([envelope * tones / np.abs(tones).max(), np.zeros(100), [1.0, -1.0]]).astype(np.float32)
    decoded = round_trip(signal)
    assert assert_within_bound(signal, decoded) > 0.95                 # and the bound is tight
    assert np.all(decoded[-102:-2] == 0.0) and decoded[-2:].tolist() == [1.0, -1.0]
    loud = np.abs(signal) > 0.1
    assert np.all(np.abs(decoded - signal)[loud] <= 0.0221 * np.abs(signal[loud]) + 1e-4)   # 2.2 % of the level


@pytest.fixture(scope="module")
def fma_clip(fixture_mp3) -> np.ndarray:
    """The real clip as the build decodes it: soundfile, mean of channels, soxr HQ to 22,050 Hz."""
    data, rate = sf.read(str(fixture_mp3), dtype="float32", always_2d=True)
    mono = data.mean(axis=1, dtype=np.float32)
    return soxr.resample(mono, rate, 22050, quality="HQ").astype(np.float32)


def test_real_fma_clip_within_the_bound(fma_clip):
    clip = np.clip(fma_clip, -1, 1)
    decoded = round_trip(clip)
    assert_within_bound(clip, decoded)
    assert 35.0 < snr_db(clip, decoded) < 41.0                        # 37.9 dB (benchmarks/codec_fidelity.py)
    pcm = CODECS["pcm16"]
    pcm16 = pcm.decode(torch.frombuffer(bytearray(pcm.encode(clip)), dtype=torch.int16), torch.empty(len(clip)))
    assert snr_db(clip, pcm16.numpy()) > snr_db(clip, decoded) + 40    # pcm16: 85 dB


# ----------------------------------------------------------------------------- shards -> device
def write_mulaw8_shards(out: Path, sizes=(3, 2), seed: int = 5) -> dict[int, tuple[np.ndarray, int]]:
    """mulaw8 shards + .idx by the real shard writer, and their manifest; {track_id: (float clip, label)}."""
    rng = np.random.default_rng(seed)
    (out / "training").mkdir(parents=True)
    tracks, shards, track_id = {}, [], 2
    for index, size in enumerate(sizes):
        rel = f"training/training-{index:06d}"
        writer = ShardWriter(out / f"{rel}.tar", out / f"{rel}.idx", MULAW8.ext, CLIP)
        for _ in range(size):
            clip = (rng.uniform(-1, 1, CLIP) ** 3).astype(np.float32)
            label = track_id % 4
            writer.add(f"{track_id:06d}", label, {"track_id": track_id, "label": label}, MULAW8.encode(clip))
            tracks[track_id] = (clip, label)
            track_id += 3
        result = writer.commit()
        shards.append({"path": f"{rel}.tar", "index": f"{rel}.idx", "num_samples": size,
                       "num_bytes": result.num_bytes, "sha256": result.sha256})
    manifest = {"format": "fmashard", "format_version": 1, "layout": "shards", "codec": "mulaw8", "dtype": "uint8",
                "sample_rate": 22050, "clip_samples": CLIP, "sample_bytes": CLIP, "record_bytes": record_bytes(CLIP),
                "vocabulary": ["a", "b", "c", "d"],
                "splits": {"training": {"num_samples": len(tracks), "shards": shards}}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return tracks


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("mulaw8")
    return out, write_mulaw8_shards(out)


def decoded_windows(clip: np.ndarray, window: WindowSpec = WINDOW) -> torch.Tensor:
    """The table's floats of a clip's fixed windows, computed from the encoded bytes (no codec decode)."""
    codes = torch.from_numpy(np.frombuffer(MULAW8.encode(clip), np.uint8).astype(np.int64))
    return torch.stack([TABLE[codes[k * window.hop: k * window.hop + window.window]] for k in range(window.count)])


@pytest.mark.parametrize("workers", [0, 1])
def test_shards_read_back_through_loader_and_device_feeder(shards, workers):
    out, tracks = shards
    spec = resolve_source(out, "training")
    assert (spec.codec, spec.dtype, spec.sample_bytes, spec.fixed_layout) == ("mulaw8", "uint8", CLIP, True)
    loader = ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False, prefetch=0, num_workers=workers))
    seen = []
    for batch in DeviceFeeder(loader, CPU, WINDOW):
        assert batch.windows.dtype == torch.float32 and batch.windows.shape == (batch.num_tracks * 3, 1, 1_000)
        for row in range(0, batch.windows.shape[0], WINDOW.count):
            clip, label = tracks[int(batch.track_ids[row])]
            assert torch.equal(batch.windows[row: row + WINDOW.count, 0], decoded_windows(clip))
            assert batch.labels[row] == label
            seen.append(int(batch.track_ids[row]))
    assert sorted(seen) == sorted(tracks)


def test_random_crops_of_mulaw8_are_table_values(shards):
    out, tracks = shards
    loader = ShardLoader(resolve_source(out, "training"), LoaderConfig(batch_size=5, shuffle=False, prefetch=0))
    host = next(iter(loader))
    got = next(iter(DeviceFeeder([host], CPU, WINDOW, seed=2, crop=RandomCrop())))
    floats = TABLE[host.audio.long()]   # the whole clips decoded, then cropped alike
    want, _ = make_windows(floats, host.labels, WINDOW, torch.Generator().manual_seed(hash((2, 0, 0)) & 0x7FFF_FFFF),
                           crop=RandomCrop())
    assert torch.equal(got.windows, want)


def test_dali_pipeline_looks_up_the_same_table(shards):
    pytest.importorskip("nvidia.dali", reason="nvidia-dali (extra 'dali') is not installed")
    from fmashard.data.dali import DaliLoader

    out, _ = shards
    spec = resolve_source(out, "training")
    host = ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False, prefetch=0))
    torch_path = list(DeviceFeeder(host, CPU, WINDOW))
    dali_path = list(DaliLoader(spec, WINDOW, batch_size=2))
    assert len(torch_path) == len(dali_path) == 3
    for a, b in zip(torch_path, dali_path):
        assert torch.equal(a.windows, b.windows) and torch.equal(a.track_ids, b.track_ids)


# ----------------------------------------------------------------------------- fmashard build --codec mulaw8
@pytest.mark.slow
def test_cli_build_with_mulaw8_is_half_the_bytes_and_within_the_bound(mini_fma, fma_dir, tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "build", "--fma-dir", mini_fma, "--out", out, "--shard-size",
                           SHARD_SIZE, "--workers", "1", "--codec", "mulaw8")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["codec"], manifest["sample_bytes"], manifest["record_bytes"]) == \
        ("mulaw8", 661_500, record_bytes(661_500))
    assert run_cli(monkeypatch, capsys, "verify", out)[0] == 0
    spec = resolve_source(out, "training")
    window = WindowSpec()   # 7 windows of 5 s
    batches = list(DeviceFeeder(ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False, prefetch=0)), CPU, window))
    assert sum(b.num_tracks for b in batches) == spec.num_samples >= 2
    for batch in batches:
        for row in range(0, batch.windows.shape[0], window.count):
            clip, _ = reference_clip(fma_dir, int(batch.track_ids[row]))   # soundfile + soxr, independently
            assert torch.equal(batch.windows[row: row + window.count, 0], decoded_windows(clip, window))
            fixed = np.stack([clip[k * window.hop: k * window.hop + window.window] for k in range(window.count)])
            assert_within_bound(fixed, batch.windows[row: row + window.count, 0].numpy())
