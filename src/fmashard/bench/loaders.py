"""The loaders `fmashard bench` runs, each as a callable that makes one timed pass over the tracks.

`RUNNERS` maps each loader name of `fmashard.bench.config.LOADERS` to the function that makes its pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from fmashard import storage
from fmashard.bench.config import BenchConfig
from fmashard.bench.naive import (
    NaiveFileDataset,
    NaiveLogMelDataset,
    NaiveMp3Dataset,
    naive_loader,
)
from fmashard.bench.timing import TimedPass, timed
from fmashard.data.device import DeviceFeeder, resolve_device
from fmashard.data.features import make_features
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from fmashard.format.spec import DatasetSpec


@dataclass
class BenchData:
    """What every pass of one bench shares: the shards, the device, the naive datasets, the track limit."""

    config: BenchConfig
    spec: DatasetSpec
    device: torch.device
    limit: int = 0
    datasets: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)   # mean bytes per track of each naive dataset


def raw_read_size() -> tuple[int, str]:
    """(read size, why) of the raw loop, chosen from this machine: half a core's L2 cache, at most 1 MiB.
    A buffer that stays in L2 takes the page-cache copy at full speed; on the 2-core Xeon of issue 27
    (2 MiB L2) reads of 64 KiB-1 MiB ran alike and 8 MiB ones (the old raw) at 87-95 % of them
    (benchmarks/read_path.py)."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip().upper()
        l2 = int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
    except (OSError, ValueError):
        return 256 << 10, "256 KiB (L2 size unknown)"
    size = max(64 << 10, min(1 << 20, l2 // 2))
    return size, f"{size >> 10} KiB (half of this CPU's {l2 >> 10} KiB L2 per core)"


class RawPass:
    """The physical limit: a plain sequential `readinto` loop over each shard, up to the bytes of the
    tracks the other loaders read, into one buffer reused by every pass (`raw_read_size`).  Local shards
    are plain unbuffered files; URLs are read through the same client the loaders use."""

    def __init__(self, spec, limit: int):
        self.spec, self.limit = spec, limit
        self.size, self.why = raw_read_size()
        self.buf = memoryview(bytearray(self.size))

    def __call__(self) -> TimedPass:
        return timed(self._shards(), lambda n: n, self.spec.record_bytes, self.limit)

    def _shards(self):
        left = self.limit
        for shard in self.spec.shards:
            take = min(shard.num_samples, left)
            with (storage.open_local(shard.url) if storage.backend_for(shard.url).local else
                  storage.open_stream(shard.url, 0, take * self.spec.record_bytes)) as f:
                read_exactly(f, self.buf, take * self.spec.record_bytes)
            yield take
            left -= take
            if not left:
                return


def read_exactly(f, buf: memoryview, nbytes: int) -> int:
    """`readinto` of `buf` until `nbytes` have been read or the file ends; the bytes read."""
    done, size = 0, len(buf)
    while done + size <= nbytes and (n := f.readinto(buf)):
        done += n
    while done < nbytes and (n := f.readinto(buf[:nbytes - done])):
        done += n
    return done


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FmashardPass:
    """fmashard's loader: the host path (`full=False`: collated int16 batches) or the full path to
    float windows on the device, and from them `features` (a `fmashard.data.features` name) when given.
    One loader for all its passes, each pass the next epoch, as in a training run (its DataLoader workers
    and their buffers are made once: the warm-up pays for them)."""

    def __init__(self, spec, config: BenchConfig, workers: int, device, full: bool, limit: int,
                 check_crc: bool = False, features: str | None = None):
        stage = make_features(features, spec.sample_rate) if features else None
        self.args = (spec, config, device, full, limit, stage)
        self.loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, num_workers=workers,
                                                     seed=config.seed, check_crc=check_crc))
        self.epoch = 0

    def __call__(self) -> TimedPass:
        self.loader.set_epoch(self.epoch)
        self.epoch += 1
        return fmashard_pass(self.loader, *self.args)


def fmashard_pass(loader: ShardLoader, spec, config: BenchConfig, device, full: bool, limit: int,
                  features=None) -> TimedPass:
    if not full:
        return timed(loader, len, spec.record_bytes, limit)
    feeder = DeviceFeeder(loader, device, WindowSpec(), seed=config.seed, features=features)
    run = timed(feeder, lambda b: b.num_tracks, spec.record_bytes, limit)
    _sync(device)
    return run


def dali_pass(spec, config: BenchConfig, device, limit: int) -> TimedPass:
    from fmashard.data.dali import DaliLoader

    loader = DaliLoader(spec, WindowSpec(), batch_size=config.batch_size,
                        device="gpu" if device.type == "cuda" else "cpu", seed=config.seed)
    return timed(loader, lambda b: b.num_tracks, spec.record_bytes, limit)


def naive_pass(dataset, config: BenchConfig, workers: int, device, bytes_per_track: int, limit: int) -> TimedPass:
    def to_device(loader):
        for windows, labels in loader:
            yield [w.to(device, non_blocking=True) for w in windows], labels.to(device)
    loader = naive_loader(dataset, config.batch_size, workers, seed=config.seed)
    return timed(to_device(loader), lambda b: len(b[1]), bytes_per_track, limit)


def _naive(name: str, data: BenchData, workers: int):
    return partial(naive_pass, data.datasets[name], data.config, workers, data.device, data.sizes[name], data.limit)


RUNNERS = {
    "raw": lambda data, workers: RawPass(data.spec, data.limit),
    "fmashard-host": lambda data, workers: FmashardPass(data.spec, data.config, workers, data.device, False,
                                                        data.limit),
    "fmashard-host-crc": lambda data, workers: FmashardPass(data.spec, data.config, workers, data.device, False,
                                                            data.limit, check_crc=True),
    "fmashard": lambda data, workers: FmashardPass(data.spec, data.config, workers, data.device, True, data.limit),
    "dali": lambda data, workers: partial(dali_pass, data.spec, data.config, data.device, data.limit),
    "naive": partial(_naive, "naive"),
    "naive-mp3": partial(_naive, "naive-mp3"),
    "fmashard-logmel": lambda data, workers: FmashardPass(data.spec, data.config, workers, data.device, True,
                                                          data.limit, features="logmel"),
    "naive-logmel": partial(_naive, "naive-logmel"),
}


def _mean_size(urls: list[str]) -> int:
    sample = urls[:16]
    return int(sum(storage.object_size(u) for u in sample) / max(1, len(sample)))


def load_bench_data(config: BenchConfig) -> BenchData:
    """The shards, the naive datasets asked for, and the track limit every loader stops at."""
    data = BenchData(config, resolve_source(config.shards, config.split), resolve_device(config.device))
    counts = [data.spec.num_samples]
    for name, dataset_class in (("naive", NaiveFileDataset), ("naive-logmel", NaiveLogMelDataset)):
        if name in config.loaders:
            dataset = data.datasets[name] = dataset_class(config.naive, config.split)
            data.sizes[name] = _mean_size([storage.join_url(dataset.base, f["path"]) for f in dataset.files])
            counts.append(len(data.datasets[name]))
    if "naive-mp3" in config.loaders:
        data.datasets["naive-mp3"] = mp3_dataset(config, data.spec)
        data.sizes["naive-mp3"] = _mean_size([str(p) for p, _ in data.datasets["naive-mp3"].tracks])
        counts.append(len(data.datasets["naive-mp3"]))
    data.limit = min(counts + ([config.max_tracks] if config.max_tracks else []))
    return data


def make_runners(config: BenchConfig) -> dict:
    """{(loader, workers): callable() -> TimedPass}, all limited to the same number of tracks.  `config.loaders`
    holds current names (`fmashard.bench.config.with_resolved_loaders`)."""
    data = load_bench_data(config)
    return {(name, workers): RUNNERS[name](data, workers)
            for name in config.loaders
            for workers in (config.workers if name != "raw" else (0,))}


def mp3_dataset(config: BenchConfig, spec) -> NaiveMp3Dataset:
    if not config.fma_dir:
        raise UserError("--loaders naive-mp3 needs --fma-dir (the FMA folder the shards were built from)")
    manifest = spec.manifest or {}
    params = manifest.get("params") or {}
    skipped = {s["track_id"] for s in manifest.get("skipped", [])}
    return NaiveMp3Dataset(config.fma_dir, params.get("subset", "small"), config.split,
                           sample_rate=int(manifest.get("sample_rate", 22050)), exclude=skipped)
