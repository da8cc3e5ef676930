"""The DALI backend yields the same windows, labels and track ids as the torch path, on tiny shards."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="nvidia-dali (extra 'dali') is not installed")

from fmashard.data import dali  # noqa: E402
from fmashard.data.dali import DaliLoader  # noqa: E402
from fmashard.data.device import DeviceFeeder  # noqa: E402
from fmashard.data.loader import LoaderConfig, ShardLoader  # noqa: E402
from fmashard.data.sources import resolve_source  # noqa: E402
from fmashard.data.transforms import NormalizeTracks, RandomCrop  # noqa: E402
from fmashard.data.windows import WindowSpec, make_windows  # noqa: E402
from fmashard.errors import UserError  # noqa: E402
from fmashard.format.tar import record_bytes  # noqa: E402
from shard_tools.tar_writer import ShardWriter  # noqa: E402

pytestmark = pytest.mark.dali

CLIP = 4_000
WINDOWS = WindowSpec(window=1_000, overlap=0.25, count=3)  # hop 750, span 2,500
SHARD_SIZES = (3, 3, 2)  # 8 tracks: batch 3 leaves a partial last batch
CODECS = {"pcm16": ("pcm", np.int16), "f16": ("f16", np.float16)}


def make_clip(rng, codec: str) -> np.ndarray:
    if codec == "pcm16":
        return rng.integers(-32768, 32768, CLIP, dtype=np.int16)
    return rng.uniform(-1, 1, CLIP).astype(np.float16)


def write_build(out: Path, codec: str = "pcm16") -> dict[int, tuple[int, np.ndarray]]:
    """Shards + .idx (by the real shard writer) + manifest.json; returns {track_id: (label, clip)}."""
    ext, np_dtype = CODECS[codec]
    rng = np.random.default_rng(7)
    sample_bytes = CLIP * np.dtype(np_dtype).itemsize
    (out / "training").mkdir(parents=True)
    tracks, shards, track_id = {}, [], 2
    for index, size in enumerate(SHARD_SIZES):
        rel = f"training/training-{index:06d}"
        writer = ShardWriter(out / f"{rel}.tar", out / f"{rel}.idx", ext, sample_bytes)
        for _ in range(size):
            label, clip = (track_id * 5) % 16, make_clip(rng, codec)  # labels 0..15: one and two digits
            writer.add(f"{track_id:06d}", label, {"track_id": track_id, "label": label}, clip.tobytes())
            tracks[track_id] = (label, clip)
            track_id += 3
        result = writer.commit()
        shards.append({"path": f"{rel}.tar", "index": f"{rel}.idx", "num_samples": result.num_samples,
                       "num_bytes": result.num_bytes, "sha256": result.sha256})
    manifest = {
        "format": "fmashard", "format_version": 1, "layout": "shards", "params": {"codec": codec},
        "codec": codec, "dtype": np.dtype(np_dtype).name, "sample_rate": 22050, "clip_samples": CLIP,
        "sample_bytes": sample_bytes, "record_bytes": record_bytes(sample_bytes),
        "vocabulary": [f"genre{i}" for i in range(16)],
        "splits": {"training": {"num_samples": len(tracks), "num_bytes": sum(s["num_bytes"] for s in shards),
                                "shards": shards}},
        "totals": {}, "skipped": [],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return tracks


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return out, write_build(out)


def expected_windows(tracks, track_ids, window: WindowSpec = WINDOWS, window_transforms=()):
    """The torch path's decode/window stage over the same tracks."""
    audio = torch.stack([torch.from_numpy(tracks[t][1]) for t in track_ids])
    labels = torch.tensor([tracks[t][0] for t in track_ids])
    return make_windows(audio, labels, window, track_ids=torch.tensor(track_ids), window_transforms=window_transforms)


def collect(loader):
    batches = list(loader)
    cat = [torch.cat([getattr(b, name) for b in batches]) for name in ("windows", "labels", "track_ids")]
    return batches, *cat


def per_track(windows, labels, track_ids, count: int = WINDOWS.count) -> dict:
    return {int(track_ids[i]): (windows[i: i + count], labels[i: i + count], track_ids[i: i + count])
            for i in range(0, len(track_ids), count)}


@pytest.mark.parametrize("codec", ["pcm16", "f16"])
def test_cpu_pipeline_matches_torch_windows(tmp_path, codec):
    tracks = write_build(tmp_path, codec)
    spec = resolve_source(tmp_path, "training")
    loader = DaliLoader(spec, WINDOWS, batch_size=3)
    batches, windows, labels, track_ids = collect(loader)

    assert len(batches) == len(loader) == 3
    assert [b.num_tracks for b in batches] == [3, 3, 2]
    for b in batches:
        assert b.windows.shape == (b.num_tracks * 3, 1, 1_000) and b.windows.dtype == torch.float32
        assert b.labels.dtype == b.track_ids.dtype == torch.int64
    order = list(tracks)  # shuffle=False: DALI keeps the stored order
    want = expected_windows(tracks, order)
    for got, expected in zip((windows, labels, track_ids), want):
        assert torch.equal(got, expected)


def test_same_batches_as_torch_loader(build):
    out, tracks = build
    spec = resolve_source(out / "manifest.json", "training")
    host = ShardLoader(spec, LoaderConfig(batch_size=3, shuffle=False, prefetch=0))
    torch_path = list(DeviceFeeder(host, torch.device("cpu"), WINDOWS))
    dali_path = list(DaliLoader(spec, WINDOWS, batch_size=3))
    assert len(torch_path) == len(dali_path)
    for a, b in zip(torch_path, dali_path):
        assert a.num_tracks == b.num_tracks
        for name in ("windows", "labels", "track_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_same_random_crops_as_torch_path(build):
    """One definition of the crops: the same seed, epoch and batch index draw the same windows."""
    out, _ = build
    spec = resolve_source(out, "training")
    crop = RandomCrop()
    host = ShardLoader(spec, LoaderConfig(batch_size=3, shuffle=False, prefetch=0))
    torch_path = list(DeviceFeeder(host, torch.device("cpu"), WINDOWS, seed=4, crop=crop))
    dali_path = list(DaliLoader(spec, WINDOWS, batch_size=3, seed=4, crop=crop))
    fixed = list(DeviceFeeder(host, torch.device("cpu"), WINDOWS))
    assert len(torch_path) == len(dali_path) == 3
    for a, b, f in zip(torch_path, dali_path, fixed):
        assert torch.equal(a.windows, b.windows) and torch.equal(a.track_ids, b.track_ids)
        assert not torch.equal(a.windows, f.windows)


def test_augmented_log_mel_batches_equal_the_torch_path(build):
    """--loader dali with augmentations and log-mel features: the same feature tensors and mixed labels as
    the torch path (the same torch code runs on DALI's windows: equal, not within a tolerance).  n_fft 512
    here because these windows are 1,000 samples (the default 2048 needs more than 1,024)."""
    from fmashard.data.features import LogMel
    from fmashard.data.transforms import parse_augment

    out, _ = build
    spec = resolve_source(out, "training")
    augment = parse_augment("gain=6,polarity,mixup=0.4")
    roles = dict(crop=RandomCrop(), window_transforms=augment.window_transforms,
                 batch_transforms=augment.batch_transforms)
    features = LogMel(22050, n_fft=512, hop_length=128, n_mels=32)
    host = ShardLoader(spec, LoaderConfig(batch_size=3, shuffle=False, prefetch=0))
    torch_path = list(DeviceFeeder(host, torch.device("cpu"), WINDOWS, seed=5, **roles, features=features))
    dali_path = list(DaliLoader(spec, WINDOWS, batch_size=3, seed=5, **roles, features=features))
    assert len(torch_path) == len(dali_path) == 3
    for a, b in zip(torch_path, dali_path):
        assert b.windows.shape == (b.num_tracks * 3, 1, 32, 1 + 1_000 // 128)
        assert torch.equal(a.windows, b.windows) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.mix.partner, b.mix.partner) and torch.equal(a.mix.weight, b.mix.weight)


def test_shuffle_is_seeded_and_every_epoch_complete(build):
    out, tracks = build
    spec = resolve_source(out, "training")
    loaders = [DaliLoader(spec, WINDOWS, batch_size=3, shuffle=True, seed=5) for _ in range(2)]
    want = per_track(*expected_windows(tracks, list(tracks)))
    orders = []
    for _ in range(2):  # 8 tracks in batches of 3: a partial batch must not leak into the next epoch
        (_, windows, labels, track_ids), (_, _, _, again) = (collect(loader) for loader in loaders)
        assert sorted(track_ids[:: WINDOWS.count].tolist()) == sorted(tracks)
        assert torch.equal(track_ids, again)  # same seed, same order
        for tid, got in per_track(windows, labels, track_ids).items():
            for g, w in zip(got, want[tid]):
                assert torch.equal(g, w)
        orders.append(track_ids[:: WINDOWS.count].tolist())
    assert orders[0] != list(tracks) or orders[1] != list(tracks)


def test_shuffled_ranks_split_every_epoch(build):
    out, tracks = build
    spec = resolve_source(out, "training")
    loaders = [DaliLoader(spec, WINDOWS, batch_size=2, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    for _ in range(2):
        seen = [collect(loader)[3][:: WINDOWS.count].tolist() for loader in loaders]
        assert [len(s) for s in seen] == [loader.num_samples() for loader in loaders] == [2, 3, 3]
        assert sorted(sum(seen, [])) == sorted(tracks)


def test_two_epochs_and_normalize(build):
    out, tracks = build
    normalize = [NormalizeTracks()]   # a transform on DALI's fixed windows: the torch path's code
    loader = DaliLoader(resolve_source(out, "training"), WINDOWS, batch_size=3, window_transforms=normalize)
    first, second = collect(loader)[1:], collect(loader)[1:]  # the partial last batch ends epoch 1 cleanly
    want = expected_windows(tracks, list(tracks), WINDOWS, normalize)
    assert not torch.allclose(want[0], expected_windows(tracks, list(tracks))[0])   # it did something
    for got in (first, second):
        assert torch.allclose(got[0], want[0], atol=1e-6)
        assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


def test_random_crop_windows_come_from_the_track(build):
    out, tracks = build
    window = WindowSpec(window=1_000, count=3)
    _, windows, labels, track_ids = collect(DaliLoader(resolve_source(out, "training"), window, batch_size=3,
                                                       crop=RandomCrop()))
    assert windows.shape == (len(tracks) * 3, 1, 1_000)
    for got, label, tid in zip(windows, labels, track_ids.tolist()):
        clip = torch.from_numpy(tracks[tid][1]).float() / 32768
        starts = (clip.unfold(0, 1_000, 1) == got[0]).all(dim=1).nonzero()
        assert len(starts) >= 1 and int(label) == tracks[tid][0]


def test_ranks_split_the_samples(build):
    out, tracks = build
    spec = resolve_source(out, "training")
    seen = []
    for rank in range(3):
        loader = DaliLoader(spec, WINDOWS, batch_size=2, rank=rank, world_size=3)
        _, _, _, track_ids = collect(loader)
        assert len(track_ids) == loader.num_samples() * WINDOWS.count
        seen += track_ids[:: WINDOWS.count].tolist()
    assert seen == list(tracks)  # contiguous ranges, in order, no overlap


def test_gpu_without_cuda_is_a_user_error(build, monkeypatch):
    out, _ = build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as err:
        DaliLoader(resolve_source(out, "training"), WINDOWS, device="gpu")
    assert str(err.value) == dali.NO_CUDA and "\n" not in str(err.value)


def test_missing_index_is_named(tmp_path):
    write_build(tmp_path)
    idx = tmp_path / "training" / "training-000001.idx"
    idx.unlink()
    with pytest.raises(UserError, match="wds2idx") as err:
        DaliLoader(resolve_source(tmp_path, "training"), WINDOWS)
    assert str(idx) in str(err.value) and "rebuild" in str(err.value) and "\n" not in str(err.value)


def test_remote_shards_are_a_user_error(build):
    out, _ = build
    spec = resolve_source(out, "training")
    remote = type(spec)(tuple(type(s)("http://example.com/" + Path(s.url).name, s.num_samples) for s in spec.shards),
                        spec.record_bytes, spec.clip_samples)
    with pytest.raises(UserError, match="DALI loader needs local shards"):
        DaliLoader(remote, WINDOWS)


def test_dali_missing_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(UserError) as err:
        dali.import_dali()
    assert str(err.value) == "DALI is not installed: pip install 'fmashard[dali]' (nvidia-dali-cuda120)"


def test_source_info_parsing():
    assert dali.shard_and_key("/d/x:y/training-000000.tar:2560:000002.pcm") == \
        ("/d/x:y/training-000000.tar", "000002")
    assert dali.shard_and_key("/s.tar:9:dir/a.b/000123.pcm") == ("/s.tar", "dir/a.b/000123")
    assert dali.track_id_of("dir/000123") == 123 and dali.track_id_of("abc") == -1
