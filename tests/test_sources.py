"""fmashard.data.sources and the other manifest readers: unknown format versions, wrong fields, JSON errors with
their position, shard paths that leave the manifest's folder, unsupported URL schemes."""
from __future__ import annotations

import copy
import json

import pytest

from fmashard.data.sources import resolve_source, spec_from_manifest
from fmashard.errors import UserError
from fmashard.format.manifest import load_manifest

SHARD = {"path": "training/training-000000.tar", "index": "training/training-000000.idx", "num_samples": 2,
         "num_bytes": 2 * 1325568 + 1024, "sha256": "0" * 64}
MANIFEST = {"format": "fmashard", "format_version": 1, "layout": "shards", "codec": "pcm16", "dtype": "int16",
            "sample_rate": 22050, "clip_samples": 661500, "sample_bytes": 1323000, "record_bytes": 1325568,
            "vocabulary": ["Folk", "Rock"],
            "splits": {"training": {"num_samples": 2, "num_bytes": SHARD["num_bytes"], "shards": [SHARD]}}}


def write_manifest(folder, **changes) -> str:
    manifest = {**copy.deepcopy(MANIFEST), **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder / "manifest.json")


def with_shard_path(path: str) -> dict:
    manifest = copy.deepcopy(MANIFEST)
    manifest["splits"]["training"]["shards"][0]["path"] = path
    return manifest


def test_a_good_manifest_is_read(tmp_path):
    url = write_manifest(tmp_path)
    assert spec_from_manifest(url, "training").shards[0].url == str(tmp_path / SHARD["path"])


@pytest.mark.parametrize("version", [99, 0, "1", None, True])
def test_unknown_format_version_is_refused(version, tmp_path):
    url = write_manifest(tmp_path, format_version=version)
    for read in (lambda: load_manifest(url), lambda: resolve_source(tmp_path), lambda: resolve_source(url)):
        with pytest.raises(UserError, match="format_version") as exc:
            read()
        assert url in str(exc.value) and repr(version) in str(exc.value)


def test_the_naive_loader_refuses_an_unknown_format_version(tmp_path):
    from fmashard.bench.naive import load_files_manifest

    url = write_manifest(tmp_path, format_version=99, layout="files",
                         splits={"training": {"num_samples": 0, "num_bytes": 0, "files": []}})
    with pytest.raises(UserError, match=r"format_version 99") as exc:
        load_files_manifest(str(tmp_path))
    assert url in str(exc.value)


def test_train_refuses_an_unknown_format_version(tmp_path, cli_error):
    url = write_manifest(tmp_path / "shards", format_version=99)
    message = cli_error("train", "--shards", url, "--out", tmp_path / "run")
    assert url in message and "format_version 99" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes, expected", [
    ({"format": "webdataset"}, "format is 'webdataset', expected 'fmashard'"),
    ({"format": None}, "no format field"),
    ({"splits": None}, "no splits field"),
    ({"splits": ["training"]}, "splits is a list, expected an object"),
])
def test_the_wrong_field_is_named(changes, expected, tmp_path):
    manifest = {**MANIFEST, **changes}
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))
    with pytest.raises(UserError) as exc:
        load_manifest(str(tmp_path / "manifest.json"))
    assert expected in str(exc.value) and "format/splits" not in str(exc.value)


def test_json_errors_keep_line_and_column(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "fmash\nard"}')
    with pytest.raises(UserError, match=r"Invalid control character at: line 1 column 18 \(char 17\)"):
        load_manifest(str(tmp_path / "manifest.json"))


@pytest.mark.parametrize("path", ["../other/x.tar", "training/../../x.tar", "/etc/passwd", "file:///etc/passwd",
                                  "http://elsewhere.example/x.tar", "s3://other-bucket/x.tar", "pipe:cat /etc/passwd",
                                  "", "C:\\x.tar"])
@pytest.mark.parametrize("base", ["LOCAL", "s3://bucket/prefix", "https://host.example/prefix"])
def test_shard_paths_must_stay_inside_the_manifests_folder(path, base, tmp_path):
    url = write_manifest(tmp_path) if base == "LOCAL" else f"{base}/manifest.json"
    with pytest.raises(UserError, match="outside") as exc:
        spec_from_manifest(url, "training", with_shard_path(path))
    assert url in str(exc.value) and repr(path) in str(exc.value)


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x", "gs://bucket/x/manifest.json"])
def test_unsupported_url_schemes_are_named(url):
    scheme = url.split(":")[0]
    with pytest.raises(UserError) as exc:
        resolve_source(url)
    assert str(exc.value) == (f"{url}: unsupported URL scheme {scheme!r} "
                              "(supported: local paths, file://, http(s)://, s3://)")


def test_an_unknown_codec_is_named(tmp_path):
    url = write_manifest(tmp_path, codec="alaw8")
    with pytest.raises(UserError) as exc:
        resolve_source(tmp_path)
    assert str(exc.value) == f"{url}: codec 'alaw8' is not one this fmashard reads (pcm16, f16, mulaw8)"


def test_the_layout_follows_the_codec(tmp_path):
    url = write_manifest(tmp_path, codec="f16")
    spec = spec_from_manifest(url, "training")
    assert (spec.codec, spec.audio_ext, spec.dtype, spec.sample_bytes) == ("f16", "f16", "float16", 1323000)
    assert spec.fixed_layout and spec.num_samples == 2


def many_shards(shards: int, per_shard: int) -> dict:
    """MANIFEST with `shards` shards of `per_shard` samples, each with its crc32 list (as a build writes them)."""
    entries = [{**SHARD, "path": f"training/training-{i:06d}.tar", "index": f"training/training-{i:06d}.idx",
                "num_samples": per_shard, "crc32": [(2_654_435_761 * (i * per_shard + k)) % 2**32
                                                    for k in range(per_shard)]} for i in range(shards)]
    return {**copy.deepcopy(MANIFEST), "splits": {"training": {"num_samples": shards * per_shard, "shards": entries}}}


def test_the_spec_holds_crc32s_in_4_bytes_a_sample_and_no_per_shard_lists(tmp_path):
    import tracemalloc

    url = write_manifest(tmp_path, **many_shards(2_000, 50))
    tracemalloc.start()
    spec = spec_from_manifest(url, "training")          # what stays of the parsed manifest: what the spec holds
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert list(spec.shards[7].crc32) == load_manifest(url)["splits"]["training"]["shards"][7]["crc32"]
    assert "shards" not in spec.manifest["splits"]["training"]              # the spec's shards hold them
    assert spec.manifest["splits"]["training"]["num_samples"] == 100_000
    assert held / spec.num_samples < 16      # 4 bytes of crc32 + a shard's url and record over 50 (ints: ~50)


@pytest.mark.parametrize("crc32", [[-1, 0], [2**32, 0], ["x", 0]])
def test_a_crc32_that_is_no_unsigned_32_bit_integer_is_named(crc32, tmp_path):
    manifest = copy.deepcopy(MANIFEST)
    manifest["splits"]["training"]["shards"][0]["crc32"] = crc32
    with pytest.raises(UserError, match=r"training-000000\.tar: crc32 must list unsigned 32-bit integers"):
        spec_from_manifest(write_manifest(tmp_path, **manifest), "training")
