"""One timed pass of one loader: wall time, time to the first batch, CPU time, peak RSS."""
from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class TimedPass:
    """One timed pass of one loader."""

    tracks: int
    bytes: int
    seconds: float
    first_batch: float
    cpu_seconds: float
    peak_rss: int
    rss_added: int
    passes: int = 1   # passes averaged into this measurement (seconds and CPU are per pass)
    main_cpu_seconds: float = 0.0   # of this process only (cpu_seconds adds its DataLoader workers)


def measure(runner, min_seconds: float) -> TimedPass:
    """Repeat one loader's pass until `min_seconds` have passed; per-pass averages.  A pass over 400
    tracks takes ~0.1 s for the fast loaders, too short to time reliably on a shared machine."""
    runs = [runner()]
    while sum(r.seconds for r in runs) < min_seconds:
        runs.append(runner())
    n = len(runs)
    return TimedPass(runs[0].tracks, runs[0].bytes, sum(r.seconds for r in runs) / n, runs[0].first_batch,
               sum(r.cpu_seconds for r in runs) / n, max(r.peak_rss for r in runs),
               max(r.rss_added for r in runs), n, sum(r.main_cpu_seconds for r in runs) / n)


class RssSampler:
    """Peak RSS of this process and its children (DataLoader workers), sampled every 10 ms;
    `added` is the peak above the RSS at the start (what the loader itself holds)."""

    def __init__(self):
        self.proc, self.peak, self.start, self._stop = psutil.Process(), 0, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.children, self.samples = [], 0
        self.cpu_seconds = 0.0   # its own thread's CPU: the measurement's, taken out of the loader's

    def _sample(self):
        # Listing children scans /proc (~2 ms of Python holding the GIL): every 10th sample only, so
        # the sampler does not slow the multi-threaded loaders it measures.
        if self.samples % 10 == 0:
            self.children = self.proc.children(recursive=True)
        self.samples += 1
        total = self.proc.memory_info().rss
        for child in self.children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self):
        start = time.thread_time()
        while not self._stop.wait(0.01):
            self._sample()
        self.cpu_seconds = time.thread_time() - start

    @property
    def added(self) -> int:
        return max(0, self.peak - self.start)

    def __enter__(self):
        self._sample()
        self.start = self.peak
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def main_cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def children_cpu_seconds() -> float:
    """This process's ended children and its live ones (persistent DataLoader workers)."""
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            live += t.user + t.system
        except psutil.Error:
            pass
    return u.ru_utime + u.ru_stime + live


def timed(batches, count_tracks, bytes_per_track: int, limit: int | None) -> TimedPass:
    """Drain an iterator of batches (stopping at `limit` tracks) and time it."""
    # the children are asked outside the main process's readings: listing them scans /proc (~1.4 ms of
    # this process's CPU), which is the measurement's, not the loader's
    children0 = children_cpu_seconds()
    with RssSampler() as rss:
        main0, start, first, tracks = main_cpu_seconds(), time.perf_counter(), None, 0
        it = iter(batches)
        for batch in it:
            if first is None:
                first = time.perf_counter() - start
            tracks += count_tracks(batch)
            if limit and tracks >= limit:
                tracks = limit
                break
        del it  # shuts down DataLoader workers, so their CPU time is counted
        seconds = time.perf_counter() - start
        main = main_cpu_seconds() - main0
    main -= rss.cpu_seconds
    cpu = main + children_cpu_seconds() - children0
    return TimedPass(tracks, tracks * bytes_per_track, seconds, first or seconds, cpu, rss.peak, rss.added,
                     main_cpu_seconds=main)
