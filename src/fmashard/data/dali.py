"""The `loader="dali"` backend: NVIDIA DALI reads the shards and cuts the windows, yielding `DeviceBatch`es
with the same shapes, dtypes and values as the torch path (`ShardLoader` -> `DeviceFeeder`).

    fn.readers.webdataset (local .tar + .idx)
      -> pcm/f16/mulaw8 (int16/float16/uint8), cls (ASCII bytes), source_info ("shard.tar:offset:000002.pcm")
      -> W fixed-hop slices, stacked -> float32: cast (x the codec's scale: 1/32768 for pcm16), or the codec's table
         (mulaw8: fn.lookup_table, the 256 floats the torch path gathers from)   [inside DALI, .gpu() on GPU]
      -> DALIGenericIterator -> (B, W, L) -> (B*W, 1, L); labels and track ids parsed on the host (B per batch)

The transforms by role (`fmashard.data.transforms`) run on the DALI output through the same code as the
torch path (`fmashard.data.windows.finish_windows`; with a `crop`, the pipeline hands out whole clips and
`make_windows` cuts them), seeded per (seed, epoch, batch index) alike, then the `batch_transforms` and
the `features` (`fmashard.data.device.finish_device_batch`: the torch path's code, on DALI's output).
DALI shuffles with its own reader (a buffer of `initial_fill` samples, shard order reshuffled every
epoch); it has no exact resume.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from fmashard import storage
from fmashard.data.device import DeviceBatch, finish_device_batch
from fmashard.data.transforms import DeviceTransforms
from fmashard.data.windows import WindowSpec, finish_windows, make_windows, samples_needed
from fmashard.errors import CorruptSampleError, UserError
from fmashard.format.codecs import get_codec
from fmashard.format.spec import DatasetSpec
from fmashard.format.tar import split_member, track_id_of

READER_NAME = "Reader"
SHUFFLE_BUFFER = 1024
NOT_INSTALLED = "DALI is not installed: pip install 'fmashard[dali]' (nvidia-dali-cuda120)"
NO_CUDA = "the DALI GPU pipeline needs CUDA, which is not available here; use device='cpu'"


def import_dali():
    try:
        import nvidia.dali as dali
        import nvidia.dali.plugin.pytorch as dali_torch
    except ImportError:
        raise UserError(NOT_INSTALLED) from None
    return dali, dali_torch


def index_url(shard_url: str) -> str:
    """The build writes `{split}-000000.idx` beside `{split}-000000.tar`."""
    return shard_url[: -len(".tar")] + ".idx" if shard_url.endswith(".tar") else shard_url + ".idx"


def local_shards(spec: DatasetSpec) -> tuple[list[str], list[str]]:
    """(tar paths, idx paths); DALI's reader opens local files only, and every shard needs its index."""
    tars, indexes = [], []
    for shard in spec.shards:
        tar = storage.local_path(shard.url)
        if tar is None:
            raise UserError(f"{shard.url}: the DALI loader needs local shards (download them, or use loader='torch')")
        idx = Path(index_url(str(tar)))
        if not idx.is_file():
            raise UserError(f"{idx}: DALI index missing for {tar.name}; rebuild the shards with `fmashard build` "
                            f"or run `wds2idx {tar} {idx}`")
        tars.append(str(tar))
        indexes.append(str(idx))
    return tars, indexes


def parse_label(raw: torch.Tensor, info: str) -> int:
    """A zero-padded `.cls` payload (ASCII digits) -> the label index."""
    text = bytes(raw.tolist()).rstrip(b"\0")
    if not text.isdigit():
        raise CorruptSampleError(*shard_and_key(info), f"label {text[:20]!r} is not a label index")
    return int(text)


def shard_and_key(info: str) -> tuple[str, str]:
    """DALI's source_info `"/x/training-000000.tar:2560:000002.pcm"` -> (shard path, key), by the key rule."""
    shard, _offset, name = info.rsplit(":", 2)
    return shard, split_member(name)[0]


def decode_text(padded: torch.Tensor) -> list[str]:
    """(B, n) zero-padded uint8 rows -> B strings."""
    return [bytes(row.tolist()).rstrip(b"\0").decode("utf-8", "replace") for row in padded]


class DaliLoader:
    """Iterable of `DeviceBatch`es for one split, read and windowed by a DALI pipeline.

    for epoch in range(epochs):
        for batch in loader: ...        # one epoch per loop; the last batch may be partial

    `rank`/`world_size` split the samples into contiguous ranges (DALI's `shard_id`/`num_shards`);
    `window` (the WindowSpec), `crop`, `window_transforms`, `batch_transforms` and `features` as for
    `DeviceFeeder`."""

    def __init__(self, spec: DatasetSpec, window: WindowSpec = WindowSpec(), batch_size: int = 8,
                 device: str = "cpu", shuffle: bool = False, seed: int = 0, num_threads: int = 2,
                 rank: int = 0, world_size: int = 1, crop=None, window_transforms=(), batch_transforms=(),
                 features=None):
        if device not in ("cpu", "gpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if batch_size < 1 or num_threads < 1:
            raise ValueError(f"batch_size and num_threads must be >= 1, got {batch_size}, {num_threads}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.transforms = DeviceTransforms(crop, window_transforms, batch_transforms)
        need = samples_needed(window, crop)
        if spec.clip_samples < need:
            raise ValueError(f"clips of {spec.clip_samples} samples are shorter than {window.count} windows "
                             f"need ({need})")
        self.dali, self.dali_torch = import_dali()
        self.gpu = device != "cpu"
        if self.gpu and not torch.cuda.is_available():
            raise UserError(NO_CUDA)
        self.paths, self.index_paths = local_shards(spec)
        self.spec, self.window = spec, window
        self.batch_size, self.shuffle, self.seed, self.num_threads = batch_size, shuffle, seed, num_threads
        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.gpu else torch.device("cpu")
        self.features = None if features is None else features.to(self.device)
        self.epoch, self._iterator = 0, None

    def num_samples(self) -> int:
        """Samples this rank reads per epoch (DALI splits `[0, N)` into `world_size` contiguous ranges)."""
        total = self.spec.num_samples
        return total * (self.rank + 1) // self.world_size - total * self.rank // self.world_size

    def __len__(self) -> int:
        return math.ceil(self.num_samples() / self.batch_size)

    def _pipeline(self):
        dali, fn, types = self.dali, self.dali.fn, self.dali.types
        spec, window = self.spec, self.window
        audio_type = getattr(types, spec.dtype.upper())   # the stored dtype: INT16, FLOAT16, UINT8
        codec = get_codec(spec.codec)
        cropped = self.transforms.crop is not None
        shard_shuffle = {"shuffle_after_epoch": True, "shuffle_after_epoch_seed": self.seed} if self.shuffle else {}

        # pad_last_batch: the reader pads a partial last batch (the iterator trims it) and starts the next
        # epoch afresh; without it the reader runs on into the next epoch, which then starts shifted
        # (unshuffled) or repeats and loses samples (shuffled).
        @dali.pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads,
                           device_id=self.device.index if self.gpu else None, seed=self.seed)
        def windows_pipeline():
            audio, cls = fn.readers.webdataset(
                paths=self.paths, index_paths=self.index_paths, ext=[spec.audio_ext, "cls"],
                dtypes=[audio_type, types.UINT8], missing_component_behavior="error",
                random_shuffle=self.shuffle, initial_fill=min(SHUFFLE_BUFFER, max(1, spec.num_samples)),
                shard_id=self.rank, num_shards=self.world_size, pad_last_batch=True, seed=self.seed,
                name=READER_NAME, **shard_shuffle)
            info = fn.pad(fn.get_property(audio, key="source_info"), fill_value=0)
            if self.gpu:
                audio = audio.gpu()
            if cropped:  # whole clip out; the crops are drawn by fmashard.data.windows
                clips = audio
            else:  # (W, L): W fixed-hop slices of the raw samples
                clips = fn.stack(*[audio[k * window.hop: k * window.hop + window.window] for k in range(window.count)])
            if codec.table is not None:   # the codec's decode is a lookup: the same table, inside DALI
                clips = fn.lookup_table(clips, keys=list(range(len(codec.table))), values=codec.table.tolist(),
                                        dtype=types.FLOAT)
            else:                         # a cast, then the codec's scale (pcm16: 1/32768), if it has one
                clips = fn.cast(clips, dtype=types.FLOAT)
                if codec.scale is not None:
                    clips = clips * codec.scale
            return clips, fn.pad(cls, fill_value=0), info

        return windows_pipeline()

    def _dali_iterator(self):
        if self._iterator is None:
            plugin = self.dali_torch
            self._iterator = plugin.DALIGenericIterator(
                [self._pipeline()], ["audio", "cls", "info"], reader_name=READER_NAME, auto_reset=True,
                last_batch_policy=plugin.LastBatchPolicy.PARTIAL)
        return self._iterator

    def _device_batch(self, out: dict, index: int) -> DeviceBatch:
        infos = decode_text(out["info"])
        labels = torch.tensor([parse_label(raw, info) for raw, info in zip(out["cls"], infos)], dtype=torch.int64)
        track_ids = torch.tensor([track_id_of(shard_and_key(info)[1]) for info in infos], dtype=torch.int64)
        labels, track_ids = labels.to(self.device), track_ids.to(self.device)
        audio, window, roles, count = out["audio"], self.window, self.transforms, len(infos)
        generator = roles.generator(self.seed, self.epoch, index)
        if roles.crop is not None:   # whole clips: cut (and transformed) as on the torch path
            windows, labels, track_ids = make_windows(audio, labels, window, generator, track_ids,
                                                      crop=roles.crop, window_transforms=roles.window_transforms)
        else:                        # fixed windows cut by DALI: transformed as on the torch path
            windows, labels, track_ids = finish_windows(audio.reshape(count * window.count, window.window), labels,
                                                        window, generator, track_ids, roles.window_transforms)
        return finish_device_batch(windows, labels, track_ids, count, window, generator, roles.batch_transforms,
                                   self.features)

    def __iter__(self):
        for index, (out,) in enumerate(self._dali_iterator()):
            yield self._device_batch(out, index)
        self.epoch += 1
