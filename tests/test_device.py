"""Device stage on the CPU: windows of every batch stay intact while later batches are produced
(window buffers are reused only once released), and batch rows are 64-byte aligned."""
import torch

from fmashard.data.device import DeviceFeeder
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from synth_shards import write_synthetic_shards

WINDOW = WindowSpec(window=1000, overlap=0.5, count=3)   # hop 500, span 2000


def test_held_windows_are_never_overwritten(tmp_path):
    truth = write_synthetic_shards(tmp_path, [5, 6], clip_samples=2001)
    loader = ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=2, seed=3))
    batches = list(DeviceFeeder(loader, torch.device("cpu"), WINDOW))   # all held at once
    seen = []
    for b in batches:
        for row, (tid, label) in enumerate(zip(b.track_ids.tolist(), b.labels.tolist())):
            audio, want = truth[tid]
            start = (row % WINDOW.count) * WINDOW.hop
            expected = torch.from_numpy(audio[start:start + WINDOW.window].astype("float32")) / 32768
            assert label == want and torch.equal(b.windows[row, 0], expected)
            seen.append(tid)
    assert sorted(set(seen)) == sorted(truth) and len(seen) == WINDOW.count * len(truth)


def test_host_rows_are_cache_line_aligned_and_rows_covers_them(tmp_path):
    write_synthetic_shards(tmp_path, [4], clip_samples=2001)          # 4002 bytes: not a multiple of 64
    batch = next(iter(ShardLoader(resolve_source(tmp_path), LoaderConfig(batch_size=3))))
    assert batch.audio.shape == (3, 2001)
    assert batch.audio.stride(0) * 2 % 64 == 0 and batch.audio.data_ptr() % 64 == 0
    rows = batch.rows()
    assert rows.is_contiguous() and rows.shape == (3, batch.audio.stride(0))
    assert torch.equal(rows[:, :2001], batch.audio)
