"""Collate stage: batch rows are 64-byte aligned, the meta rows have named columns, skipped samples drop
out of their batch, and a short last batch is the front of a full-size buffer."""
from __future__ import annotations

import numpy as np
import torch

from fmashard.data.collate import LABEL, META_COLUMNS, ROW_ALIGN, TRACK_ID, VALID, BatchBuffers, finish_batch, row_bytes
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from synth_shards import write_synthetic_shards

CLIP = 2001   # 4002 bytes: not a multiple of 64


def spec_of(tmp_path, counts=(3,)):
    truth = write_synthetic_shards(tmp_path, list(counts), clip_samples=CLIP)
    return resolve_source(tmp_path), truth


def fill(buffers: BatchBuffers, buffer: int, rows: list[tuple[int, int, int]]):
    """Write (label, track id, valid) into the slots of `buffer`; audio row i holds the value i + 1."""
    for i, (label, track_id, valid) in enumerate(rows):
        audio, meta = buffers.slot(buffer, i)
        audio[:] = np.frombuffer(np.full(CLIP, i + 1, dtype=np.int16).tobytes(), dtype=np.uint8)
        meta[LABEL], meta[TRACK_ID], meta[VALID] = label, track_id, valid


def test_meta_columns_are_named():
    assert META_COLUMNS == ("label", "track_id", "valid")
    assert (META_COLUMNS[LABEL], META_COLUMNS[TRACK_ID], META_COLUMNS[VALID]) == META_COLUMNS


def test_rows_are_cache_line_aligned(tmp_path):
    spec, _ = spec_of(tmp_path)
    assert row_bytes(spec) % ROW_ALIGN == 0 and spec.sample_bytes < row_bytes(spec) < spec.sample_bytes + ROW_ALIGN
    buffers = BatchBuffers(spec, batch_size=3, pin=False, shared=False)
    fill(buffers, 0, [(1, 10, 1), (2, 20, 1), (3, 30, 1)])
    batch = finish_batch(*buffers.take(0, 3), skipped=0)
    assert batch.audio.shape == (3, CLIP) and batch.audio.dtype == torch.int16
    assert batch.audio.stride(0) * 2 == row_bytes(spec) and batch.audio.data_ptr() % ROW_ALIGN == 0
    assert batch.rows().shape == (3, row_bytes(spec) // 2) and batch.rows().is_contiguous()


def test_finish_batch_reads_the_named_columns_and_drops_skipped_rows(tmp_path):
    spec, _ = spec_of(tmp_path)
    buffers = BatchBuffers(spec, batch_size=3, pin=False, shared=False)
    fill(buffers, 0, [(4, 10, 1), (0, 0, 0), (2, 30, 1)])   # the middle sample was skipped
    batch = finish_batch(*buffers.take(0, 3), skipped=1)
    assert batch.labels.tolist() == [4, 2] and batch.track_ids.tolist() == [10, 30]
    assert batch.labels.dtype == batch.track_ids.dtype == torch.int64
    assert batch.audio[:, 0].tolist() == [1, 3] and batch.skipped == 1 and len(batch) == 2


def test_short_last_batch(tmp_path):
    spec, truth = spec_of(tmp_path, (3, 2))
    batches = list(ShardLoader(spec, LoaderConfig(batch_size=2, shuffle=False, prefetch=0)))
    assert [len(b) for b in batches] == [2, 2, 1]
    last = batches[-1]
    assert last.audio.shape == (1, CLIP) and last.audio.stride(0) * 2 == row_bytes(spec)
    tid = int(last.track_ids[0])
    assert torch.equal(last.audio[0], torch.from_numpy(truth[tid][0])) and int(last.labels[0]) == truth[tid][1]
    assert sorted(int(t) for b in batches for t in b.track_ids) == sorted(truth)
