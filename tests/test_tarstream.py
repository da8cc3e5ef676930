"""The record reader: the fast path for fmashard's record layout agrees with the general member-by-member
parser, and hands anything unusual to it (another member order, a damaged header, the archive's end)."""
import io

import numpy as np
import pytest

from fmashard.data.sources import resolve_source
from fmashard.data.tarstream import RecordReader
from fmashard.errors import DamagedHeaderError, DataError, TruncatedShardError
from fmashard.format.codecs import get_codec
from fmashard.format.tar import PREAMBLE, member_header, padded, record_bytes
from shard_tools.tar_writer import ShardWriter
from synth_shards import write_synthetic_shards

CLIP = 1001                      # odd: the audio member needs tar padding after it
SAMPLE_BYTES = CLIP * 2


class Stream:
    """The two calls the reader makes, over bytes in memory."""

    def __init__(self, data: bytes):
        self.f = io.BytesIO(data)

    def read_exact_into(self, buf) -> int:
        return self.f.readinto(buf)

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def skip(self, n: int) -> int:
        return len(self.f.read(n))


def shard(tmp_path, count=4):
    truth = write_synthetic_shards(tmp_path, [count], clip_samples=CLIP)
    return bytearray((tmp_path / "training" / "training-000000.tar").read_bytes()), truth


def read_all(data, fast: bool):
    reader = RecordReader(Stream(bytes(data)), "s.tar", SAMPLE_BYTES, "pcm",
                          record_bytes(SAMPLE_BYTES) if fast else None)
    out = []
    while True:
        slot = np.zeros(SAMPLE_BYTES, np.uint8)
        sample = reader.read_sample(slot)
        if sample is None:
            return out, reader
        out.append((sample.key, sample.label, slot.view("<i2").copy()))


def test_fast_and_general_paths_read_the_same_samples(tmp_path):
    data, truth = shard(tmp_path)
    assert record_bytes(SAMPLE_BYTES) - padded(SAMPLE_BYTES) == PREAMBLE
    fast, _ = read_all(data, fast=True)
    general, _ = read_all(data, fast=False)
    reader = RecordReader(Stream(bytes(data)), "s.tar", SAMPLE_BYTES, "pcm", record_bytes(SAMPLE_BYTES))
    for _ in truth:
        assert reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8)) is not None
    assert reader._fast                      # every record took the fast path; the end block does not
    assert reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8)) is None and not reader._fast
    assert [(k, lab) for k, lab, _ in fast] == [(k, lab) for k, lab, _ in general]
    assert [(int(k), lab) for k, lab, _ in fast] == [(t, truth[t][1]) for t in sorted(truth)]
    for key, _, audio in fast:
        np.testing.assert_array_equal(audio, truth[int(key)][0])


def test_another_member_order_falls_back_to_the_general_parser(tmp_path):
    data, truth = shard(tmp_path, count=2)
    rb = record_bytes(SAMPLE_BYTES)
    first = bytes(data[:rb])
    # second record with its members reordered: .pcm first, then .cls and .json
    second = data[rb:2 * rb]
    cls_part, json_part, pcm_part = second[:1024], second[1024:2048], second[2048:]
    data[rb:2 * rb] = pcm_part + cls_part + json_part
    samples, reader = read_all(first + bytes(data[rb:]), fast=True)
    assert not reader._fast
    assert [int(k) for k, _, _ in samples] == sorted(truth)
    np.testing.assert_array_equal(samples[1][2], truth[int(samples[1][0])][0])


def test_damaged_header_on_the_fast_path_names_the_sample(tmp_path):
    data, _ = shard(tmp_path, count=3)
    rb = record_bytes(SAMPLE_BYTES)
    key = bytes(data[rb:rb + 6]).decode()
    data[rb + 1024 + 3] ^= 0x01                # the second sample's .json header
    reader = RecordReader(Stream(bytes(data)), "s.tar", SAMPLE_BYTES, "pcm", rb)
    assert reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8)) is not None
    with pytest.raises(DamagedHeaderError, match=rf"s\.tar key {key}: damaged tar header"):
        reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8))


@pytest.mark.parametrize("cut, names_key", [(100, False), (PREAMBLE + 10, True),
                                             (record_bytes(SAMPLE_BYTES) - 3, False)])
def test_truncation_anywhere_in_a_record_is_named(tmp_path, cut, names_key):
    """Cut inside the second record's headers, its audio, its padding."""
    data, _ = shard(tmp_path, count=2)
    rb = record_bytes(SAMPLE_BYTES)
    key = bytes(data[rb:rb + 6]).decode()
    reader = RecordReader(Stream(bytes(data[: rb + cut])), "s.tar", SAMPLE_BYTES, "pcm", rb)
    reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8))
    with pytest.raises(TruncatedShardError, match=r"s\.tar.*truncated") as err:
        reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8))
        reader.read_sample(np.zeros(SAMPLE_BYTES, np.uint8))
    if names_key:
        assert f"key {key}" in str(err.value)



@pytest.mark.parametrize("codec", ["pcm16", "f16"])
def test_a_folder_of_tars_without_manifest_is_probed(tmp_path, codec):
    info = get_codec(codec)
    for name, count in (("a", 3), ("b", 2)):
        writer = ShardWriter(tmp_path / f"{name}.tar", tmp_path / f"{name}.idx", info.ext, CLIP * info.bytes_per_sample)
        for i in range(count):
            writer.add(f"{i:06d}", 1, {"track_id": i}, bytes(CLIP * info.bytes_per_sample))
        writer.commit()
    spec = resolve_source(tmp_path)
    assert (spec.codec, spec.clip_samples, spec.record_bytes) == (codec, CLIP, record_bytes(CLIP * 2))
    assert [s.num_samples for s in spec.shards] == [3, 2]


def test_a_tar_without_audio_is_not_an_fmashard_shard(tmp_path):
    (tmp_path / "x.tar").write_bytes(member_header("000001.wav", 4) + bytes(512) + bytes(1024))
    with pytest.raises(DataError, match=r"key 000001: first sample has no \.pcm or \.f16 or \.mulaw8 member"):
        resolve_source(str(tmp_path / "x.tar"))


def test_the_writers_fast_check_answers_as_the_field_by_field_parser_for_any_one_byte_changed(tmp_path):
    """`_writer_preamble` (byte comparisons, no numpy) gives `_any_preamble`'s answer or none at all,
    on a real preamble and on it with any one byte changed (names, sizes, checksums, padding, label)."""
    from fmashard.data.tarstream import _any_preamble, _writer_preamble, parse_preamble

    data, _ = shard(tmp_path, count=2)
    good = bytes(data[:PREAMBLE])
    assert _writer_preamble(good, SAMPLE_BYTES, b".pcm") == _any_preamble(good, SAMPLE_BYTES, b".pcm") is not None
    answered = 0
    for at in range(PREAMBLE):
        for flip in (0x01, 0x10, 0x80):
            pre = bytearray(good)
            pre[at] ^= flip
            pre = bytes(pre)
            fast, general = _writer_preamble(pre, SAMPLE_BYTES, b".pcm"), _any_preamble(pre, SAMPLE_BYTES, b".pcm")
            assert fast is None or fast == general, (at, flip)
            assert parse_preamble(pre, SAMPLE_BYTES, b".pcm") == general, (at, flip)
            answered += fast is not None
    assert answered > 0     # a label digit or the .json text changed: still a record, still answered fast


def test_headers_not_the_writers_but_intact_go_to_the_field_by_field_parser():
    """Another mtime (any tar tool's header): not the writer's bytes, still parsed the same way."""
    import tarfile

    from fmashard.data.tarstream import _writer_preamble, parse_preamble

    def header(name, size):
        info = tarfile.TarInfo(name)
        info.size, info.mtime = size, 1_700_000_000
        return info.tobuf(tarfile.USTAR_FORMAT)
    pre = (header("dir/000007.cls", 1) + b"3".ljust(512, b"\0") + header("dir/000007.json", 2)
           + b"{}".ljust(512, b"\0") + header("dir/000007.pcm", SAMPLE_BYTES))
    assert _writer_preamble(pre, SAMPLE_BYTES, b".pcm") is None
    assert parse_preamble(pre, SAMPLE_BYTES, b".pcm") == ("dir/000007", 3)
    mine = (member_header("dir/000007.cls", 1) + b"3".ljust(512, b"\0") + member_header("dir/000007.json", 2)
            + b"{}".ljust(512, b"\0") + member_header("dir/000007.pcm", SAMPLE_BYTES))
    assert _writer_preamble(mine, SAMPLE_BYTES, b".pcm") == ("dir/000007", 3)
