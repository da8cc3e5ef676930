"""`check_crc`: a flipped audio byte (corruption in transit or at rest) is caught on read, not only by
`fmashard verify`, when the manifest carries the crc32 of every sample's audio."""
import json
import zlib
from pathlib import Path

import pytest

from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.errors import CorruptSampleError, UserError
from fmashard.format.tar import PREAMBLE
from http_server import FolderServer
from synth_shards import write_synthetic_shards
from test_checkpoint import write_run_shards


def add_crcs(root: Path) -> None:
    """Record the crc32 of every sample's audio in the manifest, as `fmashard build` does."""
    manifest = json.loads((root / "manifest.json").read_text())
    rb, sb = manifest["record_bytes"], manifest["sample_bytes"]
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            data = (root / shard["path"]).read_bytes()
            shard["crc32"] = [zlib.crc32(data[i * rb + PREAMBLE:i * rb + PREAMBLE + sb])
                              for i in range(shard["num_samples"])]
    (root / "manifest.json").write_text(json.dumps(manifest))


def flip_audio_byte(root: Path, shard: str, index: int) -> str:
    """Flip one byte in the middle of record `index`'s audio; its key."""
    rb = json.loads((root / "manifest.json").read_text())["record_bytes"]
    path = root / shard
    data = bytearray(path.read_bytes())
    data[index * rb + PREAMBLE + 777] ^= 0x10
    path.write_bytes(bytes(data))
    return bytes(data[index * rb:index * rb + 6]).decode()


@pytest.fixture
def corrupt(tmp_path):
    truth = write_synthetic_shards(tmp_path, [4, 5, 3], clip_samples=2000)
    add_crcs(tmp_path)
    key = flip_audio_byte(tmp_path, "training/training-000001.tar", 2)
    return tmp_path, truth, key


def ids(loader):
    return sorted(t for b in loader for t in b.track_ids.tolist())


@pytest.mark.parametrize("scheme,threads", [("local", 1), ("local", 2), ("http", 1), ("http", 2)])
def test_check_crc_names_the_flipped_sample_and_skip_loses_only_it(corrupt, scheme, threads):
    root, truth, key = corrupt

    def loader(**kw):
        return ShardLoader(resolve_source(source), LoaderConfig(batch_size=3, read_threads=threads, **kw))
    with FolderServer(root) as url:
        source = root if scheme == "local" else f"{url}/manifest.json"
        assert ids(loader()) == sorted(truth)              # unchecked, the damaged sample goes through
        with pytest.raises(CorruptSampleError, match=rf"training-000001\.tar key {key}: .*crc32 mismatch"):
            list(loader(check_crc=True))
        skipping = loader(check_crc=True, on_error="skip")
        assert ids(skipping) == sorted(t for t in truth if f"{t:06d}" != key)
        assert skipping.policy.num_skipped == 1 and skipping.skipped_this_epoch == 1


def test_check_crc_works_in_dataloader_workers(corrupt):
    root, truth, key = corrupt
    loader = ShardLoader(resolve_source(root), LoaderConfig(batch_size=2, num_workers=2, check_crc=True,
                                                            on_error="skip"))
    assert ids(loader) == sorted(t for t in truth if f"{t:06d}" != key)
    assert loader.skipped_this_epoch == 1
    with pytest.raises(CorruptSampleError, match=f"key {key}"):
        list(ShardLoader(resolve_source(root), LoaderConfig(batch_size=2, num_workers=2, check_crc=True)))


def test_check_crc_without_recorded_checksums_is_a_user_error(tmp_path):
    write_synthetic_shards(tmp_path, [3], clip_samples=1000)       # a manifest without crc32 lists
    for source in (tmp_path, tmp_path / "training"):                # and shards without a manifest
        with pytest.raises(UserError, match="recorded no checksums"):
            ShardLoader(resolve_source(source), LoaderConfig(check_crc=True))


@pytest.mark.slow
def test_the_build_records_every_samples_crc32_in_the_manifest(demo_corpus, tmp_path):
    from shard_tools.build import BuildConfig, build_shards

    build_shards(BuildConfig(fma_dir=demo_corpus, out=tmp_path, workers=1, shard_size="8MB"))
    spec = resolve_source(tmp_path, "training")
    for shard in spec.shards:
        data = Path(shard.url).read_bytes()
        assert tuple(shard.crc32) == tuple(zlib.crc32(data[i * spec.record_bytes + PREAMBLE:][:spec.sample_bytes])
                                    for i in range(shard.num_samples))
    assert len(list(ShardLoader(spec, LoaderConfig(check_crc=True)))) == len(ShardLoader(spec))


def make_checkpoint(path: Path, shards: Path) -> Path:
    """An untrained soundnet-large checkpoint for the shards' vocabulary (as tests/test_evaluate.py)."""
    from dataclasses import asdict

    import torch

    from fmashard.data.windows import WindowSpec
    from fmashard.models import build_model
    from fmashard.train.checkpoint import save_checkpoint

    vocabulary = json.loads((shards / "manifest.json").read_text())["vocabulary"]
    window = WindowSpec(window=2205, count=2, overlap=0.25)
    torch.manual_seed(0)
    model = build_model("soundnet-large", len(vocabulary), window.window)
    save_checkpoint(path, {"model_name": "soundnet-large", "model": model.state_dict(), "vocabulary": vocabulary,
                           "window": asdict(window), "config": {"amp": False}, "epoch": 1, "step": 1})
    return path


def test_cli_check_crc_stops_evaluate_and_train_in_one_line(tmp_path, cli_error):
    shards = write_run_shards(tmp_path / "shards", {"training": [2], "validation": [2], "test": [2, 2]},
                              clip_samples=6000)
    checkpoint = make_checkpoint(tmp_path / "run" / "best.pt", shards)
    message = cli_error("evaluate", "--checkpoint", checkpoint, "--shards", shards, "--check-crc")
    assert "recorded no checksums" in message
    add_crcs(shards)
    key = flip_audio_byte(shards, "test/test-000001.tar", 1)
    message = cli_error("evaluate", "--checkpoint", checkpoint, "--shards", shards, "--check-crc")
    assert f"test-000001.tar key {key}" in message and "crc32 mismatch" in message
    flip_audio_byte(shards, "training/training-000000.tar", 0)
    message = cli_error("train", "--shards", shards, "--out", tmp_path / "train", "--check-crc", "--epochs", "1",
                        "--model", "soundnet-large", "--window-seconds", "0.1", "--windows", "2")
    assert "training-000000.tar key" in message and "crc32 mismatch" in message


def test_bench_runs_the_host_path_with_and_without_the_check_side_by_side(corrupt):
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.runner import run_bench

    root, truth, key = corrupt
    with pytest.raises(CorruptSampleError, match=f"key {key}"):      # the -crc variant does check
        run_bench(BenchConfig(shards=str(root), loaders=("fmashard-host-crc",), rounds=1, min_seconds=0, device="cpu"),
                  log=lambda msg: None)
    flip_audio_byte(root, "training/training-000001.tar", 2)        # flipped back: the build is intact
    report = run_bench(BenchConfig(shards=str(root), loaders=("fmashard-host", "fmashard-host-crc"), rounds=1,
                                   min_seconds=0, device="cpu"), log=lambda msg: None)
    rows = {r["loader"]: r for r in report["results"]}
    assert set(rows) == {"fmashard-host", "fmashard-host-crc"} and {r["tracks"] for r in rows.values()} == {len(truth)}
