"""fmashard.format.tar: the record layout, member headers (build -> parse) and the one key rule."""
from __future__ import annotations

import tarfile

import pytest

from fmashard.errors import DamagedHeaderError
from fmashard.format.tar import (
    BLOCK,
    END_OF_ARCHIVE,
    PREAMBLE,
    ZERO_BLOCK,
    clip_of,
    is_fixed_layout,
    key_of,
    member_header,
    member_name,
    padded,
    parse_header,
    record_bytes,
    records_in,
    shard_bytes,
    split_member,
    track_id_of,
)


def test_padded_rounds_up_to_whole_blocks():
    assert [padded(n) for n in (0, 1, 511, 512, 513, 1024)] == [0, 512, 512, 512, 1024, 1024]


def test_record_bytes_formula():
    assert record_bytes(1_323_000) == 1_325_568  # ARCHITECTURE.md, pcm16 661,500 samples
    assert record_bytes(512) == PREAMBLE + 512 == 6 * BLOCK
    assert record_bytes(513) == 5 * 512 + 1024
    assert shard_bytes(4, 1000) == 4 * record_bytes(1000) + len(END_OF_ARCHIVE) == 4 * 3584 + 1024


def test_fixed_layout_and_record_count():
    assert is_fixed_layout(record_bytes(2002), 2002)
    assert not is_fixed_layout(record_bytes(2002) + BLOCK, 2002) and not is_fixed_layout(None, 2002)
    assert records_in(shard_bytes(7, 1000), record_bytes(1000)) == (7, 0)
    assert records_in(shard_bytes(7, 1000) + 5, record_bytes(1000)) == (7, 5)


def test_header_is_deterministic_ustar():
    header = member_header("000002.pcm", 1_323_000)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    assert len(header) == BLOCK and header[257:263] == b"ustar\x00"
    assert (info.name, info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname) == \
        ("000002.pcm", 1_323_000, 0o644, 0, 0, 0, "", "")


@pytest.mark.parametrize("name, key, ext", [
    ("000002.pcm", "000002", "pcm"), ("train/000002.f16", "train/000002", "f16"),
    ("a.b/000002.cls", "a.b/000002", "cls"), ("x.tar.gz", "x", "tar.gz"), ("noext", "noext", "")])
def test_header_build_parse_round_trip_follows_the_key_rule(name, key, ext):
    header = parse_header(member_header(name, 12345), "s.tar", None)
    assert (header.key, header.ext, header.size) == (key, ext, 12345)
    assert split_member(name) == (key, ext)


def test_long_names_use_the_ustar_prefix():
    name = "d" * 120 + "/000007.json"
    raw = member_header(name, 3)
    assert raw[345:350] == b"ddddd"                 # the directory went to the prefix field
    header = parse_header(raw, "s.tar", None)
    assert (header.key, header.ext) == ("d" * 120 + "/000007", "json")


def test_parse_header_end_block_and_damage():
    assert parse_header(ZERO_BLOCK, "s.tar", None) is None
    raw = bytearray(member_header("000002.pcm", 10))
    raw[0] ^= 1
    with pytest.raises(DamagedHeaderError, match="s.tar key 000001: damaged tar header"):
        parse_header(raw, "s.tar", "000001")


def test_key_and_track_id():
    assert key_of(2) == "000002" and key_of(1234567) == "1234567"
    assert member_name(key_of(2), "pcm") == "000002.pcm"
    assert [track_id_of(k) for k in ("000002", "train/000155", "abc", "")] == [2, 155, -1, -1]
    assert all(track_id_of(key_of(t)) == t for t in (0, 2, 999_999, 1_000_000))


def test_clip_keys_name_their_track_and_clip():
    assert key_of(2, 3) == "000002_0003" and key_of(1234567, 12345) == "1234567_12345"
    assert split_member(member_name(key_of(2, 3), "pcm")) == ("000002_0003", "pcm")   # no dot: one sample
    assert [track_id_of(k) for k in ("000002_0003", "train/000155_0000", "x_1", "2_y")] == [2, 155, -1, -1]
    assert [clip_of(k) for k in ("000002_0003", "000002", "train/000155_0012", "x_1")] == [3, 0, 12, -1]
    assert all((track_id_of(key_of(t, c)), clip_of(key_of(t, c))) == (t, c) for t in (0, 7, 10**6) for c in (0, 9999))
