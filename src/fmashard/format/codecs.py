"""The one codec registry: how a clip's samples are stored, written and read back.

A codec names the audio member's extension, the stored dtype (little-endian) and its bytes per
sample, the numpy `encode` the build applies to a float32 clip in [-1, 1], and the torch `decode` the
device stage applies to a raw batch (stored values -> float32).  An integer codec says how it decodes,
by a `scale` (pcm16: `* 1/32768`) or a `table`, so that a backend that cannot call torch (DALI) decodes
it alike, and a new integer codec without either is refused at once.  Every reader, writer and check looks
a codec up here; nothing else lists codecs.  A codec decoded by a table (`mulaw8`) also names its
`table` (stored value -> float32), so a backend that cannot call torch (DALI) does the same lookup.

`mulaw8`: mu-law companding (mu = 255: the curve of G.711 and WaveNet), one byte per sample, half the
bytes of pcm16.  y = sign(x) ln(1 + 255 |x|) / ln 256 is quantised to 255 evenly spaced levels,
stored as `128 + round(127 y)` (1..255; 128 is silence, as in unsigned 8-bit PCM; 0 is never written
and decodes as 1).  An odd level count keeps 0 exact and the levels symmetric, as G.711's two zero codes
do; WaveNet's 256 levels (torchaudio's `mu_law_encoding`) have no zero, so silence would decode to
+8.6e-5.  The error is at most `mulaw8_error_bound(x)` = (|x| + 1/255) ((256)^(1/254) - 1): 2.2 % of
the amplitude plus 8.7e-5: an SNR of about 38 dB whatever the level of the music (37.5-37.9 dB on clips
from -13 to -25 dBFS RMS, `benchmarks/codec_fidelity.py`), where pcm16 gives 76-88 dB.

`float32` is the `--layout files` storage (one `.pt` tensor per track): not a shard codec, so
`fmashard build --codec float32` stays refused.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fmashard.errors import UserError

PCM16_SCALE = 1.0 / 32768.0
MULAW_MU = 255
MULAW_LEVELS = 127     # levels on each side of zero: stored values 128 - 127 .. 128 + 127
MULAW_ZERO = 128


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
    table: np.ndarray | None = field(default=None, compare=False, repr=False)   # decode by lookup: float32
                                                #   value of every stored value (uint8 codecs: 256 entries)
    scale: float | None = None                  # decode by a cast and `* scale` (pcm16: 1/32768); None: a cast
    bytes_per_sample: int = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "bytes_per_sample", np.dtype(self.dtype).itemsize)
        if np.dtype(self.dtype).kind in "iu" and (self.table is None) == (self.scale is None):
            raise ValueError(f"codec {self.name}: an integer codec decodes by a scale or by a table (one of them)")

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


def scale_decoder(scale: float) -> Callable:
    """A codec's `decode` by a converting copy, then an in-place scale: both vectorised kernels, where one
    mixed-dtype `mul` is not (on this CPU the two passes are 1.4-2x faster than one)."""
    def decode(audio, out):
        return out.view(audio.shape).copy_(audio).mul_(scale)

    return decode


def decode_widen(audio, out):
    """Any float (or other) dtype: a converting copy."""
    return out.view(audio.shape).copy_(audio)


def _encode_mulaw8(clip: np.ndarray) -> bytes:
    """mu-law companding of the clip (clipped to [-1, 1]), rounded to 255 levels: 1..255, 128 = silence."""
    x = np.clip(clip.astype(np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MULAW_MU * np.abs(x)) / math.log1p(MULAW_MU)
    return (MULAW_ZERO + np.round(MULAW_LEVELS * y)).astype(np.uint8).tobytes()


def _mulaw8_table() -> np.ndarray:
    """The float32 value of each of the 256 stored bytes (0, never written, decodes as 1: -1.0)."""
    y = (np.maximum(np.arange(256), 1) - MULAW_ZERO) / MULAW_LEVELS
    return (np.sign(y) * np.expm1(np.abs(y) * math.log1p(MULAW_MU)) / MULAW_MU).astype(np.float32)


def mulaw8_error_bound(x: np.ndarray) -> np.ndarray:
    """The largest |decode(encode(x)) - x| for x in [-1, 1]: half a level in the companded domain,
    expanded by the curve's slope at the far end of that half level."""
    half_level = math.log1p(MULAW_MU) / (2 * MULAW_LEVELS)
    return (np.abs(x) + 1.0 / MULAW_MU) * math.expm1(half_level)


def lookup_decoder(table: np.ndarray) -> Callable:
    """A codec's `decode` by one gather from `table` (stored value -> float32): the stored values become
    int32 indices, `index_select` writes the floats into `out`.  Plain torch ops, the same on CPU and
    GPU; the table is copied to each device once, not per batch."""
    on_device: dict = {}

    def decode(audio, out):
        import torch

        device_table = on_device.get(audio.device)
        if device_table is None:
            device_table = on_device[audio.device] = torch.tensor(table, device=audio.device)
        flat = out.view(-1)
        torch.index_select(device_table, 0, audio.to(torch.int32).reshape(-1), out=flat)
        return flat.view(audio.shape)

    return decode


_MULAW8_TABLE = _mulaw8_table()
_MULAW8_TABLE.setflags(write=False)   # one table for the build, the torch decode and DALI


CODECS: dict[str, Codec] = {codec.name: codec for codec in (
    Codec("pcm16", "pcm", "int16", _encode_pcm16, scale_decoder(PCM16_SCALE), scale=PCM16_SCALE),
    Codec("f16", "f16", "float16", _encode_f16, decode_widen),
    Codec("mulaw8", "mulaw8", "uint8", _encode_mulaw8, lookup_decoder(_MULAW8_TABLE), table=_MULAW8_TABLE),
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
