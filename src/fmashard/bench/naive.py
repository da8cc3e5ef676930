"""The naive baselines, faithful to the original notebook's `FMADataset` — for benchmarks only.

`naive`:     a map-style Dataset over the build's `--layout files` output: `torch.load` one float32
             file per track, cut the 7 windows in a Python loop, one-hot label, default collate,
             `DataLoader(batch_size=8, shuffle=True)`.  Works on `s3://`/`http(s)://` too (one GET
             per track: the per-object baseline).
`naive-mp3`: the notebook's other mode: decode and resample the MP3 inside `__getitem__` on every
             epoch (with correct rate handling, which the notebook lacked).
`naive-logmel`: `naive` + the log-mel features users compute without fmashard: the same
             `fmashard.data.features` module, on the CPU, one window at a time in `__getitem__`.

Kept: per-item Python work and float32 files.  Not kept: the notebook's silent retry with the next
index on a failed item (that changes the data), and its use of half the dataset.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fmashard import storage
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from fmashard.format.manifest import load_manifest, manifest_url


def python_windows(waveform: torch.Tensor, window: WindowSpec) -> list[torch.Tensor]:
    """The notebook's loop: slices of `window` samples every `hop`, at most `count` of them."""
    subsamples = []
    for i in range(0, waveform.size(0) - window.window + 1, window.hop):
        subsamples.append(waveform[i:i + window.window])
        if len(subsamples) == window.count:
            break
    return subsamples


def one_hot(label: int, num_classes: int) -> torch.Tensor:
    out = torch.zeros(num_classes)
    out[label] = 1.0
    return out


def load_files_manifest(source: str) -> tuple[dict, str]:
    url = manifest_url(storage.check_scheme(str(source)))
    manifest = load_manifest(url)  # format, format_version, paths inside its folder
    if manifest.get("layout") != "files":
        raise UserError(f"{url}: the naive loader needs a `fmashard build --layout files` output")
    return manifest, storage.parent_url(url)


class NaiveFileDataset(Dataset):
    """One `.pt` float32 waveform per track (local path or URL), windows cut in Python."""

    def __init__(self, source: str, split: str = "training", window: WindowSpec = WindowSpec()):
        manifest, self.base = load_files_manifest(source)
        if split not in manifest["splits"]:
            raise UserError(f"{source}: no split {split!r}")
        self.files = manifest["splits"][split]["files"]
        self.num_classes = len(manifest["vocabulary"])
        self.sample_rate = int(manifest.get("sample_rate", 22050))
        self.window = window

    def __len__(self):
        return len(self.files)

    def _load(self, url: str) -> torch.Tensor:
        if storage.is_remote(url):
            return torch.load(io.BytesIO(storage.read_bytes(url)))
        return torch.load(url)

    def __getitem__(self, index):
        entry = self.files[index]
        waveform = self._load(storage.join_url(self.base, entry["path"]))
        return python_windows(waveform, self.window), one_hot(entry["label"], self.num_classes)


class NaiveLogMelDataset(NaiveFileDataset):
    """`NaiveFileDataset`, then the same log-mel spectrogram as the device stage (`make_features("logmel")`),
    computed on the CPU for each window in turn: a list of W (1, n_mels, frames) tensors per track."""

    def __init__(self, source: str, split: str = "training", window: WindowSpec = WindowSpec()):
        super().__init__(source, split, window)
        self.features = None   # made on first use, in the process that uses it (DataLoader workers too)

    def __getitem__(self, index):
        from fmashard.data.features import make_features

        if self.features is None:
            self.features = make_features("logmel", self.sample_rate)
        windows, label = super().__getitem__(index)
        with torch.no_grad():
            return [self.features(w.view(1, 1, -1))[0] for w in windows], label


class NaiveMp3Dataset(Dataset):
    """Decode + mono + resample each MP3 on every access (the notebook's precomputed=False)."""

    def __init__(self, fma_dir: str, subset: str = "small", split: str = "training",
                 window: WindowSpec = WindowSpec(), sample_rate: int = 22050, exclude: set[int] = frozenset()):
        """`exclude`: track ids the build skipped (its manifest's `skipped` list), so that this loader
        sees the same tracks as the shard loaders."""
        from shard_tools.fma_metadata import audio_path, load_selection

        selection = load_selection(fma_dir, subset)
        self.tracks = [(audio_path(fma_dir, subset, t.track_id), t.label) for t in selection.tracks[split]
                       if t.track_id not in exclude]
        self.num_classes = len(selection.vocabulary)
        self.window, self.sample_rate = window, sample_rate

    def __len__(self):
        return len(self.tracks)

    def __getitem__(self, index):
        import soundfile as sf
        import soxr

        path, label = self.tracks[index]
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        if rate != self.sample_rate:
            mono = soxr.resample(mono, rate, self.sample_rate, quality="HQ")
        waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
        windows = python_windows(waveform, self.window)
        if len(windows) < self.window.count:  # too short: pad with zeros (the build would skip it)
            windows += [torch.zeros(self.window.window)] * (self.window.count - len(windows))
        return windows, one_hot(label, self.num_classes)


def naive_loader(dataset: Dataset, batch_size: int = 8, num_workers: int = 0, shuffle: bool = True,
                 seed: int = 0) -> DataLoader:
    """The notebook's DataLoader: default collate -> (list of W tensors (B, L), one-hot labels (B, C))."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator)
