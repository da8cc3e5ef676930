"""The one codec registry: how a clip's samples are stored, written and read back.

A codec names the audio member's extension, the stored dtype (little-endian) and its bytes per
sample, the numpy `encode` the build applies to a float32 clip in [-1, 1], and the torch `decode` the
device stage applies to a raw batch (stored values -> float32).  Every reader, writer and check looks
a codec up here; nothing else lists codecs.

`float32` is the `--layout files` storage (one `.pt` tensor per track): not a shard codec, so
`fmashard build --codec float32` stays refused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fmashard.errors import UserError

PCM16_SCALE = 1.0 / 32768.0


class UnknownCodecError(UserError, ValueError):
    """A codec name the registry does not have (one line in the CLI, a ValueError for callers)."""


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str                                    # the audio member's extension: `{key}.{ext}`
    dtype: str                                  # numpy / torch dtype name of a stored sample: "int16"
    encode: Callable[[np.ndarray], bytes]       # float32 clip in [-1, 1] -> stored little-endian bytes
    decode: Callable                            # (raw tensor, float32 tensor of as many elements) -> float32
    in_shards: bool = True                      # False: stored only by `--layout files`
    bytes_per_sample: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "bytes_per_sample", np.dtype(self.dtype).itemsize)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def _encode_pcm16(clip: np.ndarray) -> bytes:
    """round(x * 32768) clipped to int16, little-endian."""
    return np.clip(np.round(clip * 32768), -32768, 32767).astype("<i2").tobytes()


def _encode_f16(clip: np.ndarray) -> bytes:
    return clip.astype("<f2").tobytes()


def _encode_f32(clip: np.ndarray) -> bytes:
    return clip.astype("<f4").tobytes()


def _decode_pcm16(audio, out):
    """A converting copy, then an in-place scale: both vectorised kernels, where one mixed-dtype `mul`
    is not (on this CPU the two passes are 1.4-2x faster than one)."""
    return out.view(audio.shape).copy_(audio).mul_(PCM16_SCALE)


def decode_widen(audio, out):
    """Any float (or other) dtype: a converting copy."""
    return out.view(audio.shape).copy_(audio)


CODECS: dict[str, Codec] = {codec.name: codec for codec in (
    Codec("pcm16", "pcm", "int16", _encode_pcm16, _decode_pcm16),
    Codec("f16", "f16", "float16", _encode_f16, decode_widen),
    Codec("float32", "pt", "float32", _encode_f32, decode_widen, in_shards=False),
)}
SHARD_CODECS = tuple(name for name, codec in CODECS.items() if codec.in_shards)
FILES_CODEC = "float32"    # what `--layout files` stores


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise UnknownCodecError(f"unknown codec {name!r} (known: {', '.join(CODECS)})") from None


def shard_codec_for_ext(ext: str) -> Codec | None:
    """The shard codec whose audio members end in `.{ext}`, or None."""
    return next((CODECS[n] for n in SHARD_CODECS if CODECS[n].ext == ext), None)


def decoders_by_dtype() -> dict:
    """torch dtype -> decode, for a stage that has only the raw tensor (each shard codec has its own
    stored dtype: `test_format_codecs` checks it)."""
    return {CODECS[n].torch_dtype: CODECS[n].decode for n in SHARD_CODECS}
