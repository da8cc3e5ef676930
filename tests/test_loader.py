from collections import Counter

import numpy as np
import pytest
import torch

from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.errors import DataError, TruncatedShardError
from synth_shards import write_synthetic_shards

COUNTS = [7, 3, 9, 1, 6, 5]   # uneven, so ranges start and end mid-shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return root, write_synthetic_shards(root, COUNTS)


def ids_of(batches):
    return [tid for b in batches for tid in b.track_ids.tolist()]


def test_batches_hold_the_exact_audio_and_labels(shards):
    root, truth = shards
    batches = list(ShardLoader(resolve_source(root), LoaderConfig(batch_size=4, prefetch=0)))
    assert sorted(ids_of(batches)) == sorted(truth)
    for b in batches:
        assert b.audio.dtype == torch.int16 and b.audio.is_contiguous()
        for row, tid, label in zip(b.audio, b.track_ids.tolist(), b.labels.tolist()):
            assert np.array_equal(row.numpy(), truth[tid][0]) and label == truth[tid][1]


def test_read_threads_change_speed_not_batches(shards):
    spec = resolve_source(shards[0])
    def batches(threads):
        return [(b.track_ids.tolist(), b.audio.clone()) for b in
                ShardLoader(spec, LoaderConfig(batch_size=4, seed=1, read_threads=threads))]
    one, three = batches(1), batches(3)
    assert [ids for ids, _ in one] == [ids for ids, _ in three]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(one, three))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_once_across_workers_and_ranks(shards, workers):
    root, truth = shards
    spec, seen, lengths = resolve_source(root), Counter(), []
    for rank in range(2):
        loader = ShardLoader(spec, LoaderConfig(batch_size=4, num_workers=workers, rank=rank, world_size=2,
                                                equal_ranks=False))
        batches = list(loader)
        assert len(batches) == len(loader)
        lengths.append(len(batches))
        seen.update(ids_of(batches))
    assert seen == Counter(list(truth)) and lengths[0] == lengths[1]


def test_equal_ranks_give_equal_batches_and_drop_only_the_remainder(shards):
    root, truth = shards
    spec = resolve_source(root)   # 31 samples over 2 ranks: 15 each, 1 dropped this epoch
    per_rank = [list(ShardLoader(spec, LoaderConfig(batch_size=4, rank=r, world_size=2, num_workers=2)))
                for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    seen = Counter(ids_of(per_rank[0]) + ids_of(per_rank[1]))
    assert max(seen.values()) == 1 and len(seen) == len(truth) - 1


def test_epochs_reshuffle_and_seed_reproduces(shards):
    spec = resolve_source(shards[0])
    def order(epoch, seed=0):
        loader = ShardLoader(spec, LoaderConfig(batch_size=4, seed=seed))
        loader.set_epoch(epoch)
        return ids_of(loader)
    assert order(1) == order(1) and order(1) != order(2) and order(1, seed=5) != order(1)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_yields_exactly_the_rest_of_the_epoch(shards, workers):
    spec = resolve_source(shards[0])
    cfg = LoaderConfig(batch_size=3, num_workers=workers, shuffle_buffer=9)
    full_loader = ShardLoader(spec, cfg)
    full_loader.set_epoch(4)
    full = [b.track_ids.tolist() for b in full_loader]
    for cut in (1, 4, len(full) - 1):
        loader = ShardLoader(spec, cfg)
        loader.set_epoch(4)
        it = iter(loader)
        head = [next(it).track_ids.tolist() for _ in range(cut)]
        state = loader.state_dict()
        del it
        resumed = ShardLoader(spec, cfg)
        resumed.load_state_dict(state)
        assert head + [b.track_ids.tolist() for b in resumed] == full


def test_resume_refuses_a_different_configuration(shards):
    spec = resolve_source(shards[0])
    state = ShardLoader(spec, LoaderConfig(batch_size=3)).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        ShardLoader(spec, LoaderConfig(batch_size=4)).load_state_dict(state)


def truncate_copy(root, tmp_path, keep_bytes):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    shard = dst / "training" / "training-000002.tar"
    with open(shard, "r+b") as f:
        f.truncate(keep_bytes)
    return dst, shard


def test_truncated_shard_names_shard_and_skip_mode_counts(shards, tmp_path):
    root, truth = shards
    spec0 = resolve_source(root)
    dst, shard = truncate_copy(root, tmp_path, spec0.record_bytes * 4 + 700)  # cut inside sample 5 of 9
    spec = resolve_source(dst)
    with pytest.raises(TruncatedShardError, match=r"training-000002\.tar.*truncated"):
        list(ShardLoader(spec, LoaderConfig(batch_size=4, shuffle=False)))
    loader = ShardLoader(spec, LoaderConfig(batch_size=4, shuffle=False, on_error="skip"))
    got = ids_of(loader)
    assert len(got) == len(truth) - 5 and len(set(got)) == len(got)
    assert loader.policy.num_skipped == 5


def test_a_data_error_in_a_dataloader_worker_reaches_the_caller_as_itself(shards, tmp_path):
    import pickle

    root, _ = shards
    dst, _ = truncate_copy(root, tmp_path, resolve_source(root).record_bytes * 4 + 700)
    with pytest.raises(TruncatedShardError, match=r"training-000002\.tar.*truncated") as info:
        list(ShardLoader(resolve_source(dst), LoaderConfig(batch_size=4, num_workers=2)))
    assert "Traceback" not in str(info.value) and info.value.url.endswith("training-000002.tar")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is TruncatedShardError and (str(again), again.key) == (str(info.value), info.value.key)


def test_wrong_size_and_missing_member_are_named(tmp_path):
    from fmashard.format.tar import member_header
    truth = write_synthetic_shards(tmp_path, [3], clip_samples=1000)
    shard = tmp_path / "training" / "training-000000.tar"
    data = bytearray(shard.read_bytes())
    # rename the second sample's .pcm member to .wav: "no .pcm member"
    rb = resolve_source(tmp_path).record_bytes
    hdr_at = rb + 2 * 1024
    name = bytes(data[hdr_at:hdr_at + 100]).split(b"\0")[0].decode()
    new = member_header(name.replace(".pcm", ".wav"), 2000)
    data[hdr_at:hdr_at + 512] = new
    shard.write_bytes(bytes(data))
    key = name.split(".")[0]
    with pytest.raises(DataError, match=rf"training-000000\.tar key {key}: sample has no \.pcm"):
        list(ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, shuffle=False)))
    loader = ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, shuffle=False, on_error="skip"))
    assert sorted(ids_of(loader)) == sorted(t for t in truth if f"{t:06d}" != key)
    assert loader.policy.num_skipped == 1


def test_damaged_header_mid_shard_is_named_and_skip_resyncs_at_the_next_record(tmp_path):
    truth = write_synthetic_shards(tmp_path, [5], clip_samples=1000)
    shard = tmp_path / "training" / "training-000000.tar"
    data = bytearray(shard.read_bytes())
    rb = resolve_source(tmp_path).record_bytes
    key = bytes(data[2 * rb:2 * rb + 6]).decode()
    data[2 * rb + 1024 + 5] ^= 0x01          # the third sample's .json header: checksum fails
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"training-000000\.tar key {key}: damaged tar header"):
        list(ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, shuffle=False)))
    loader = ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, shuffle=False, on_error="skip"))
    assert ids_of(loader) == [t for t in sorted(truth) if f"{t:06d}" != key]
    assert loader.policy.num_skipped == 1


def test_folder_without_manifest_and_brace_pattern(shards, tmp_path):
    root, truth = shards
    pattern = str(root / "training" / "training-{000000..000005}.tar")
    spec = resolve_source(pattern)
    assert spec.num_samples == sum(COUNTS) and spec.record_bytes == resolve_source(root).record_bytes
    assert sorted(ids_of(ShardLoader(spec, LoaderConfig(batch_size=5)))) == sorted(truth)


def test_pipe_urls_need_allow_pipe(shards):
    from fmashard.errors import UserError
    with pytest.raises(UserError, match="allow_pipe=True"):
        resolve_source(f"pipe:cat {shards[0]}/training/training-000000.tar")


def test_buffers_are_allocated_once_and_reused_in_every_later_epoch(shards):
    from fmashard.data import recycle

    recycle.clear()
    loader = ShardLoader(resolve_source(shards[0]), LoaderConfig(batch_size=2, shuffle_buffer=6))
    counts = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        for _batch in loader:
            pass
        counts.append(sum(len(v) for v in recycle._cache.values()))
    assert counts[1] == counts[2] == counts[3] <= 3 + 8      # pending buffers + what is in flight
    recycle.clear()


def test_worker_buffers_are_allocated_once_and_reused_in_every_later_epoch(shards):
    root, truth = shards
    loader = ShardLoader(resolve_source(root), LoaderConfig(batch_size=2, shuffle_buffer=6, num_workers=2))
    allocated, fresh = [], []
    for epoch in range(4):
        loader.set_epoch(epoch)
        seen = []
        for batch in loader:
            seen += batch.track_ids.tolist()
            assert any(batch.audio.untyped_storage().data_ptr() == b.data_ptr()
                       for ring in loader.rings for b in ring.buffers)   # a view of the main's mapping
        assert sorted(seen) == sorted(truth)
        allocated.append(sum(ring.allocated for ring in loader.rings))
        fresh.append(sum(ring.fresh for ring in loader.rings))
    assert allocated[0] == allocated[3] == 2 * (3 + 6)     # made once, before the first epoch
    assert fresh == [0, 0, 0, 0]                           # no worker ever needed a buffer of its own


def test_a_consumer_holding_every_batch_gets_fresh_worker_buffers_not_overwritten_ones(shards):
    root, truth = shards
    loader = ShardLoader(resolve_source(root), LoaderConfig(batch_size=1, shuffle_buffer=1, num_workers=2))
    batches = list(loader)                                 # 31 batches held: more than the rings have
    assert sum(ring.fresh for ring in loader.rings) > 0
    for b in batches:
        tid = b.track_ids.item()
        assert np.array_equal(b.audio[0].numpy(), truth[tid][0]) and b.labels.item() == truth[tid][1]


def test_workers_without_per_sample_work_are_noted_once_in_the_log(shards, caplog, monkeypatch):
    import fmashard.data.loader as loader_module

    monkeypatch.setattr(loader_module, "_noted", [])
    spec = resolve_source(shards[0])
    with caplog.at_level("INFO", logger="fmashard"):
        ShardLoader(spec, LoaderConfig(batch_size=2))
        assert not [r for r in caplog.records if "read threads already do the I/O" in r.getMessage()]
        ShardLoader(spec, LoaderConfig(batch_size=2, num_workers=2))
        ShardLoader(spec, LoaderConfig(batch_size=2, num_workers=1))
    notes = [r.getMessage() for r in caplog.records if "read threads already do the I/O" in r.getMessage()]
    assert notes == ["--workers 2: the read threads already do the I/O in this process; workers pay off for "
                     "CPU-heavy per-sample work (--check-crc, host-side codecs)"]
