"""The loaders `fmashard bench` runs, each as a callable that makes one timed pass over the tracks."""
from __future__ import annotations

from functools import partial

import torch

from fmashard import storage
from fmashard.bench.runner import BenchConfig, Run, default_device, timed
from fmashard.data.device import DeviceFeeder, resolve_device
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec


def raw_read(spec, limit: int) -> Run:
    """Sequential reads of the same shard bytes the loaders parse: the physical limit."""
    buf = bytearray(8 << 20)

    def chunks():
        left = limit
        for shard in spec.shards:
            take = min(shard.num_samples, left)
            with storage.open_stream(shard.url, 0, take * spec.record_bytes) as stream:
                while stream.readinto(buf):
                    pass
            yield take
            left -= take
            if not left:
                return
    return timed(chunks(), lambda n: n, spec.record_bytes, limit)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wds_pass(spec, config: BenchConfig, workers: int, device, full: bool, limit: int, check_crc: bool = False) -> Run:
    loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, num_workers=workers, seed=config.seed,
                                            check_crc=check_crc))
    if not full:
        return timed(loader, len, spec.record_bytes, limit)
    feeder = DeviceFeeder(loader, device, WindowSpec(), seed=config.seed)
    run = timed(feeder, lambda b: b.num_tracks, spec.record_bytes, limit)
    _sync(device)
    return run


def dali_pass(spec, config: BenchConfig, device, limit: int) -> Run:
    from fmashard.data.dali import DaliLoader

    loader = DaliLoader(spec, WindowSpec(), batch_size=config.batch_size,
                        device="gpu" if device.type == "cuda" else "cpu", seed=config.seed)
    return timed(loader, lambda b: b.num_tracks, spec.record_bytes, limit)


def naive_pass(dataset, config: BenchConfig, workers: int, device, bytes_per_track: int, limit: int) -> Run:
    from fmashard.bench.naive import naive_loader

    def to_device(loader):
        for windows, labels in loader:
            yield [w.to(device, non_blocking=True) for w in windows], labels.to(device)
    loader = naive_loader(dataset, config.batch_size, workers, seed=config.seed)
    return timed(to_device(loader), lambda b: len(b[1]), bytes_per_track, limit)


def _mean_size(urls: list[str]) -> int:
    sample = urls[:16]
    return int(sum(storage.object_size(u) for u in sample) / max(1, len(sample)))


def make_runners(config: BenchConfig) -> dict:
    """{(loader, workers): callable() -> Run}, all limited to the same number of tracks."""
    from fmashard.bench.naive import NaiveFileDataset, load_files_manifest

    spec = resolve_source(config.shards, config.split)
    device = resolve_device(config.device) if config.device != "auto" else default_device()
    counts, datasets, sizes = [spec.num_samples], {}, {}
    if "naive" in config.loaders:
        datasets["naive"] = NaiveFileDataset(config.naive, config.split)
        _, base = load_files_manifest(config.naive)
        sizes["naive"] = _mean_size([storage.join_url(base, f["path"]) for f in datasets["naive"].files])
        counts.append(len(datasets["naive"]))
    if "naive-mp3" in config.loaders:
        datasets["naive-mp3"] = mp3_dataset(config, spec)
        sizes["naive-mp3"] = _mean_size([str(p) for p, _ in datasets["naive-mp3"].tracks])
        counts.append(len(datasets["naive-mp3"]))
    limit = min(counts + ([config.max_tracks] if config.max_tracks else []))
    runners = {}
    for name in config.loaders:
        for workers in (config.workers if name not in ("raw",) else (0,)):
            if name == "raw":
                runners[(name, 0)] = partial(raw_read, spec, limit)
            elif name in ("wds", "wds-host", "wds-host-crc"):
                runners[(name, workers)] = partial(wds_pass, spec, config, workers, device, name == "wds", limit,
                                                   check_crc=name == "wds-host-crc")
            elif name == "dali":
                runners[(name, workers)] = partial(dali_pass, spec, config, device, limit)
            else:
                runners[(name, workers)] = partial(naive_pass, datasets[name], config, workers, device,
                                                   sizes[name], limit)
    return runners


def mp3_dataset(config: BenchConfig, spec):
    from fmashard.errors import UserError
    from fmashard.bench.naive import NaiveMp3Dataset

    manifest = spec.manifest or {}
    fma_dir = config.fma_dir or (manifest.get("params") or {}).get("fma_dir")
    if not fma_dir:
        raise UserError("--loaders naive-mp3 needs --fma-dir (the FMA folder the shards were built from)")
    params = manifest.get("params") or {}
    skipped = {s["track_id"] for s in manifest.get("skipped", [])}
    return NaiveMp3Dataset(fma_dir, params.get("subset", "small"), config.split,
                           sample_rate=int(manifest.get("sample_rate", 22050)), exclude=skipped)
