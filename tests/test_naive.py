"""The naive baselines (fmashard.bench.naive): the notebook's windows, one-hot labels and default collate from a
`--layout files` build, the MP3 mode over the same tracks, and the manifest check."""
import json

import pytest
import torch

from fmashard.bench.naive import (
    NaiveFileDataset,
    NaiveMp3Dataset,
    load_files_manifest,
    naive_loader,
    one_hot,
    python_windows,
)
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from shard_tools.build import BuildConfig, build_shards
from synth_shards import write_synthetic_shards

WINDOW = WindowSpec(window=22050, overlap=0.25, count=3)   # 1-s windows: the 3-s clips of the build hold 3


@pytest.fixture(scope="module")
def files_build(demo_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("naive") / "files"
    build_shards(BuildConfig(fma_dir=demo_corpus, out=out, layout="files", workers=2, clip_seconds=3.0,
                             min_seconds=1.0))
    return out


def test_python_windows_are_the_notebooks_loop():
    waveform = torch.arange(661_500, dtype=torch.float32)
    windows = python_windows(waveform, WindowSpec())             # 5 s at 22,050 Hz, 25 % overlap, 7 windows
    assert len(windows) == 7 and all(w.shape == (110_250,) for w in windows)
    assert [int(w[0]) for w in windows] == [k * 82_688 for k in range(7)]   # hop = 110,250 - 27,562
    assert len(python_windows(waveform[:300_000], WindowSpec())) == 3       # as many as fit, no padding
    assert python_windows(waveform[:100], WindowSpec()) == []


def test_one_hot():
    assert one_hot(2, 5).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_the_naive_dataset_yields_windows_of_each_pt_file_and_its_one_hot_label(files_build):
    manifest = json.loads((files_build / "manifest.json").read_text())
    entries = manifest["splits"]["training"]["files"]
    dataset = NaiveFileDataset(str(files_build), "training", window=WINDOW)
    assert len(dataset) == len(entries) > 0 and dataset.num_classes == len(manifest["vocabulary"])
    for index in (0, len(dataset) - 1):
        windows, label = dataset[index]
        waveform = torch.load(files_build / entries[index]["path"])
        assert waveform.dtype == torch.float32 and waveform.shape == (66_150,)   # 3 s at 22,050 Hz
        assert len(windows) == 3
        for k, window in enumerate(windows):
            assert torch.equal(window, waveform[k * WINDOW.hop:k * WINDOW.hop + WINDOW.window])
        assert label.shape == (dataset.num_classes,) and int(label.argmax()) == entries[index]["label"]
        assert label.sum() == 1


def test_the_naive_loader_collates_like_the_notebook_and_covers_every_track_once(files_build):
    dataset = NaiveFileDataset(str(files_build / "manifest.json"), "training", window=WINDOW)
    batches = list(naive_loader(dataset, batch_size=4, seed=3))
    windows, labels = batches[0]
    assert isinstance(windows, list) and len(windows) == 3
    assert all(w.shape == (4, 22050) and w.dtype == torch.float32 for w in windows)
    assert labels.shape == (4, dataset.num_classes)
    assert sum(len(b[1]) for b in batches) == len(dataset) and all(len(b[1]) == 4 for b in batches[:-1])
    order = [b[1].argmax(1).tolist() for b in naive_loader(dataset, batch_size=4, seed=3)]
    assert order == [b[1].argmax(1).tolist() for b in batches]       # seeded shuffle: the same order again


def test_the_mp3_mode_reads_the_same_tracks_the_build_kept(files_build, demo_corpus):
    manifest = json.loads((files_build / "manifest.json").read_text())
    skipped = {s["track_id"] for s in manifest.get("skipped", [])}
    dataset = NaiveMp3Dataset(str(demo_corpus), "small", "training", window=WINDOW, exclude=skipped)
    built = manifest["splits"]["training"]["files"]
    assert len(dataset) == len(built)
    assert sorted(label for _, label in dataset.tracks) == sorted(f["label"] for f in built)
    windows, label = dataset[0]
    assert len(windows) == 3 and all(w.shape == (22050,) for w in windows) and label.sum() == 1


def test_the_manifest_check(files_build, tmp_path):
    manifest, base = load_files_manifest(str(files_build))
    assert manifest["layout"] == "files" and base.rstrip("/") == str(files_build)
    assert load_files_manifest(str(files_build / "manifest.json"))[1] == base
    write_synthetic_shards(tmp_path / "shards", [2], clip_samples=1000)
    with pytest.raises(UserError, match=r"manifest\.json: the naive loader needs a `fmashard build --layout files`"):
        NaiveFileDataset(str(tmp_path / "shards"))
    with pytest.raises(UserError, match="no split 'nope'"):
        NaiveFileDataset(str(files_build), "nope")
    with pytest.raises(UserError, match="no manifest.json"):
        NaiveFileDataset(str(tmp_path / "empty"))
