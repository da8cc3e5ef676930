"""The shared buffer ring of a DataLoader worker: a buffer goes back to the worker only once the
consumer let go of the batch and every view of it; none free means a fresh buffer, never a wait."""
import numpy as np
import torch

from fmashard.data.collate import HostBatch
from fmashard.data.shm import FREE, MAIN, WORKER, RingBatch, SharedRing


def ring(count=3):
    return SharedRing(count, (4, 64), torch.int16, clip=50)


def batch_in(r, rows=4):
    audio = r.acquire(rows)
    audio.fill_(7)
    return HostBatch(audio[:, :50], torch.arange(rows), torch.arange(rows) + 100, skipped=1)


def test_a_batch_travels_as_indices_and_comes_back_as_a_view_of_the_same_buffer():
    r = ring()
    msg = r.message(batch_in(r))
    assert isinstance(msg, RingBatch) and (msg.token, msg.index, msg.size, msg.skipped) == (r.token, 0, 4, 1)
    got = r.receive(msg)
    assert got.audio.untyped_storage().data_ptr() == r.buffers[0].data_ptr()
    assert got.audio.shape == (4, 50) and int(got.audio[3, 49]) == 7
    assert got.track_ids.tolist() == [100, 101, 102, 103] and r.flags[0] == MAIN


def test_a_buffer_is_freed_only_when_the_batch_and_its_views_are_gone():
    r = ring()
    got = r.receive(r.message(batch_in(r)))
    view = got.audio[1:]
    del got
    r.reclaim()
    assert r.flags[0] == MAIN           # a view is still alive
    del view
    r.reclaim()
    assert r.flags[0] == FREE
    assert r.acquire(4).data_ptr() == r.buffers[0].data_ptr()   # and the worker reuses it


def test_no_free_buffer_means_a_fresh_one_counted_and_sent_whole():
    r = ring(count=1)
    held = r.acquire(4)
    extra = r.acquire(4)
    assert extra.data_ptr() != held.data_ptr() and extra.is_shared() and r.fresh == 1
    b = HostBatch(extra[:, :50], torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
    msg = r.message(b)                # not in the ring: the audio itself goes (torch pickles it)
    assert msg.index == -1 and msg.audio is b.audio and msg.fresh == 1 and r.fresh == 0
    got = ring().receive(msg)
    assert got.audio is b.audio and got.audio.shape == (4, 50)


def test_a_new_pass_frees_what_the_worker_took_but_never_sent():
    r = ring()
    r.acquire(4)                          # an abandoned pass's pending buffer
    kept = r.receive(r.message(batch_in(r)))   # one the consumer still holds
    r.start()
    assert r.flags.tolist() == [FREE, MAIN, FREE]
    assert kept.audio.untyped_storage().data_ptr() == r.buffers[1].data_ptr()


def test_worker_flags_are_shared_memory():
    r = ring()
    assert r.flags.is_shared() and all(b.is_shared() for b in r.buffers)
    assert np.array_equal(r.flags.numpy(), [FREE] * 3) and WORKER != FREE


def test_the_pin_thread_copies_a_ring_batch_out_and_the_buffer_goes_back(monkeypatch):
    r = ring()
    monkeypatch.setattr(HostBatch, "pin_memory", lambda b: HostBatch(b.audio.clone(), b.labels, b.track_ids))
    pinned = r.message(batch_in(r)).pin_memory()    # what torch's pin thread calls, in the main process
    assert isinstance(pinned, HostBatch) and int(pinned.audio[0, 0]) == 7 and pinned.audio.shape == (4, 50)
    r.reclaim()
    assert r.flags[0] == FREE and pinned.audio.data_ptr() != r.buffers[0].data_ptr()


def test_read_threads_taking_buffers_at_once_never_share_one():
    """A worker's read threads each take the buffer of the batch they read (records.read_batch)."""
    import sys
    import threading

    r, got, interval = SharedRing(64, (2, 64), torch.int16), [], sys.getswitchinterval()
    start = threading.Barrier(8)

    def take():
        start.wait()
        for _ in range(10):
            got.append(r.acquire(2).data_ptr())
    sys.setswitchinterval(1e-6)   # switch threads as often as the interpreter can: races show
    try:
        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    ring_ptrs = {b.data_ptr() for b in r.buffers}
    taken = [p for p in got if p in ring_ptrs]
    assert len(got) == 80 and len(taken) == 64 and len(set(taken)) == 64   # every ring buffer once
    assert r.fresh == 16 and (r.flags == WORKER).all()                      # the rest fresh, counted
