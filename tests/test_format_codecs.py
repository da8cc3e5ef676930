"""fmashard.format.codecs: the one registry — encode (build) and decode (device) per codec, lookups.
(mulaw8's curve, bound and data path: tests/test_mulaw8.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fmashard.errors import UserError
from fmashard.format.codecs import (
    CODECS,
    FILES_CODEC,
    PCM16_SCALE,
    SHARD_CODECS,
    decoders_by_dtype,
    get_codec,
    mulaw8_error_bound,
    shard_codec_for_ext,
)

CLIP = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 1 / 65536, 3 / 65536, 0.123456], np.float32)


def test_pcm16_encode_rounds_half_to_even_and_clips():
    pcm = np.frombuffer(get_codec("pcm16").encode(CLIP), "<i2")
    assert pcm.tolist()[:9] == [0, 16384, -16384, 32767, -32768, 32767, -32768, 0, 2]
    assert pcm.tolist()[9] == round(0.123456 * 32768)


def test_float_encodes_are_little_endian_casts():
    np.testing.assert_array_equal(np.frombuffer(get_codec("f16").encode(CLIP), "<f2"), CLIP.astype(np.float16))
    assert get_codec("float32").encode(CLIP) == CLIP.astype("<f4").tobytes()


@pytest.mark.parametrize("name", list(CODECS))
def test_encode_then_decode_round_trip(name):
    codec = CODECS[name]
    clip = np.clip(CLIP, -1, 1 - 1 / 32768)
    stored = codec.encode(clip)
    assert len(stored) == len(clip) * codec.bytes_per_sample
    raw = torch.frombuffer(bytearray(stored), dtype=codec.torch_dtype)
    out = codec.decode(raw, torch.empty(len(clip), dtype=torch.float32))
    assert out.dtype == torch.float32
    tolerance = {"pcm16": 0.5 / 32768, "f16": 1e-3, "mulaw8": mulaw8_error_bound(clip) + 1e-7, "float32": 0.0}[name]
    assert np.all(np.abs(out.numpy() - clip) <= tolerance)


def test_pcm16_decode_is_a_copy_then_an_exact_scale():
    raw = torch.tensor([[-32768, -1, 0, 1, 32767]], dtype=torch.int16)
    out = torch.full((5,), float("nan"))
    got = get_codec("pcm16").decode(raw, out)
    assert got.data_ptr() == out.data_ptr() and got.shape == raw.shape    # written into `out`, reshaped
    assert got.tolist() == [[-1.0, -1 / 32768, 0.0, 1 / 32768, 32767 / 32768]]
    assert PCM16_SCALE == 1 / 32768


def test_registry_lookups():
    assert SHARD_CODECS == ("pcm16", "f16", "mulaw8") and FILES_CODEC not in SHARD_CODECS
    assert [(c.ext, c.dtype, c.bytes_per_sample) for c in CODECS.values()] == \
        [("pcm", "int16", 2), ("f16", "float16", 2), ("mulaw8", "uint8", 1), ("pt", "float32", 4)]
    assert shard_codec_for_ext("pcm").name == "pcm16" and shard_codec_for_ext("f16").name == "f16"
    assert shard_codec_for_ext("mulaw8").name == "mulaw8" and CODECS["mulaw8"].torch_dtype == torch.uint8
    assert [name for name, c in CODECS.items() if c.table is not None] == ["mulaw8"]
    assert shard_codec_for_ext("pt") is None and shard_codec_for_ext("wav") is None
    assert CODECS["f16"].torch_dtype == torch.float16


def test_decode_by_dtype_is_unambiguous():
    """A stage that has only the raw tensor finds the codec by its dtype: one shard codec per dtype."""
    decoders = decoders_by_dtype()
    assert len(decoders) == len(SHARD_CODECS)
    assert decoders[torch.int16] is CODECS["pcm16"].decode and decoders[torch.float16] is CODECS["f16"].decode
    assert decoders[torch.uint8] is CODECS["mulaw8"].decode


def test_unknown_codec_is_a_one_line_user_error():
    with pytest.raises(UserError) as info:
        get_codec("mp3")
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "unknown codec 'mp3' (known: pcm16, f16, mulaw8, float32)"


def test_an_integer_codec_says_how_it_decodes():
    """By a scale (what DALI multiplies by after its cast) or a table, never neither: a 24-bit codec
    registered without one would otherwise decode as raw integers without a word."""
    from fmashard.format.codecs import Codec, decode_widen

    assert get_codec("pcm16").scale == PCM16_SCALE and get_codec("mulaw8").scale is None
    assert get_codec("f16").scale is None and get_codec("f16").table is None
    with pytest.raises(ValueError, match="codec pcm24: an integer codec decodes by a scale or by a table"):
        Codec("pcm24", "pcm24", "int32", lambda clip: b"", decode_widen)
    with pytest.raises(ValueError, match="one of them"):
        Codec("u8", "u8", "uint8", lambda clip: b"", decode_widen, scale=1 / 128, table=np.zeros(256, np.float32))
    raw = torch.tensor([[-32768, 16384]], dtype=torch.int16)
    assert get_codec("pcm16").decode(raw, torch.empty(2)).tolist() == [[-1.0, 0.5]]
