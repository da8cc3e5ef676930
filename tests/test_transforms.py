"""Device transforms: RandomCrop changes training batches, draws the same crops for the same (seed, epoch,
batch index) — the formula of every release so far — and evaluation passes no transforms at all."""
from __future__ import annotations

import pytest
import torch

import fmashard.train.evaluate
import fmashard.train.loop
from fmashard.data.device import DeviceFeeder
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.transforms import (
    DeviceTransforms,
    Mixup,
    NormalizeTracks,
    RandomCrop,
    batch_generator,
    normalize_tracks,
)
from fmashard.data.windows import WindowSpec, make_windows
from fmashard.train import TrainConfig, train
from synth_shards import write_synthetic_shards
from test_checkpoint import TINY, write_run_shards

WINDOW = WindowSpec(window=500, overlap=0.5, count=3)   # span 1000 of 3000-sample clips
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def host_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    truth = write_synthetic_shards(root, [3, 2], clip_samples=3000)
    batches = list(ShardLoader(resolve_source(root), LoaderConfig(batch_size=2, shuffle=False, prefetch=0)))
    return batches, truth


def test_random_crop_changes_training_batches_only(host_batches):
    batches, _ = host_batches
    fixed = list(DeviceFeeder(batches, CPU, WINDOW))
    cropped = list(DeviceFeeder(batches, CPU, WINDOW, seed=1, crop=RandomCrop()))
    assert len(fixed) == len(cropped) == 3
    for f, c in zip(fixed, cropped):
        assert f.windows.shape == c.windows.shape and not torch.equal(f.windows, c.windows)
        assert torch.equal(f.labels, c.labels) and torch.equal(f.track_ids, c.track_ids)


def test_crops_are_the_seeded_formula_and_real_slices(host_batches):
    """Batch `index` of `epoch` draws torch.randint(0, N - L + 1, (B, W)) from a generator seeded with
    hash((seed, epoch, index)) & 0x7FFF_FFFF: runs before transforms were a list crop exactly alike."""
    batches, truth = host_batches
    seed, epoch = 11, 2
    feeder = DeviceFeeder(batches, CPU, WINDOW, seed=seed, epoch=epoch, crop=RandomCrop())
    for index, (host, got) in enumerate(zip(batches, feeder)):
        generator = torch.Generator().manual_seed(hash((seed, epoch, index)) & 0x7FFF_FFFF)
        starts = torch.randint(0, 3000 - WINDOW.window + 1, (len(host), WINDOW.count), generator=generator)
        for row, start in enumerate(starts.reshape(-1).tolist()):
            audio, _ = truth[int(got.track_ids[row])]
            want = torch.from_numpy(audio[start:start + WINDOW.window].astype("float32")) / 32768
            assert torch.equal(got.windows[row, 0], want)


def test_same_seed_epoch_and_index_draw_the_same_crops(host_batches):
    batches, _ = host_batches
    crop = RandomCrop()
    whole = list(DeviceFeeder(batches, CPU, WINDOW, seed=3, epoch=1, crop=crop))
    resumed = list(DeviceFeeder(batches[1:], CPU, WINDOW, seed=3, epoch=1, start_index=1, crop=crop))
    assert all(torch.equal(a.windows, b.windows) for a, b in zip(whole[1:], resumed))
    other_epoch = list(DeviceFeeder(batches, CPU, WINDOW, seed=3, epoch=2, crop=crop))
    assert not torch.equal(whole[0].windows, other_epoch[0].windows)
    assert torch.equal(batch_generator(3, 1, 0).get_state(), batch_generator(3, 1, 0).get_state())


def test_normalize_tracks_zero_mean_unit_std():
    audio = torch.randint(-32768, 32767, (2, 4_000), dtype=torch.int16, generator=torch.Generator().manual_seed(0))
    window = WindowSpec(window=1_000, overlap=0.0, count=4)
    windows, _ = make_windows(audio, torch.zeros(2), window, window_transforms=[NormalizeTracks()])
    normed = windows.reshape(2, -1)
    assert torch.allclose(normed.mean(1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(normed.std(1), torch.ones(2), atol=1e-3)
    plain, _ = make_windows(audio, torch.zeros(2), window)
    assert torch.equal(windows, normalize_tracks(plain[:, 0], 4).unsqueeze(1))


def test_training_config_builds_the_roles():
    assert TrainConfig(shards="x", out="y", random_crop=False, augment="none").transforms() == DeviceTransforms()
    crops = TrainConfig(shards="x", out="y", augment="none").transforms()
    assert isinstance(crops.crop, RandomCrop) and crops.window_transforms == crops.batch_transforms == ()
    roles = TrainConfig(shards="x", out="y", random_crop=False, augment="mixup,gain").transforms()
    assert roles.crop is None and [repr(t) for t in roles.window_transforms] == ["RandomGain(db=6)"]
    assert [repr(t) for t in roles.batch_transforms] == ["Mixup(alpha=0.2)"]


def test_a_transform_in_the_wrong_role_is_refused(host_batches):
    batches, _ = host_batches
    with pytest.raises(TypeError, match="RandomCrop chooses where the windows are cut: pass it as crop="):
        list(DeviceFeeder(batches, CPU, WINDOW, window_transforms=[RandomCrop()]))
    with pytest.raises(TypeError, match="Mixup mixes the labels too: pass it as batch_transforms="):
        list(DeviceFeeder(batches, CPU, WINDOW, window_transforms=[Mixup()]))


def test_training_crops_and_evaluation_passes_no_transforms(tmp_path, monkeypatch):
    """A run with --random-crop: its training feeders carry RandomCrop, validation and precise-BN none."""
    seen = {"train": [], "evaluate": []}

    def recording(kind):
        class Recording(DeviceFeeder):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                seen[kind].append(self.transforms)
        return Recording

    monkeypatch.setattr(fmashard.train.loop, "DeviceFeeder", recording("train"))
    monkeypatch.setattr(fmashard.train.evaluate, "DeviceFeeder", recording("evaluate"))
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 2], "validation": [2]})
    config = TrainConfig(shards=str(shards), out=str(tmp_path / "run"), random_crop=True, precise_bn=1,
                         augment="none", verbose=False, **{**TINY, "epochs": 1})
    assert train(config).steps == 2
    assert len(seen["train"]) == 1 and isinstance(seen["train"][0].crop, RandomCrop)
    assert (seen["train"][0].window_transforms, seen["train"][0].batch_transforms) == ((), ())
    assert len(seen["evaluate"]) == 2 and all(not t for t in seen["evaluate"])   # precise BN, validation
