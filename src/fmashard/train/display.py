"""The training loop's guards and display: a one-line torch.compile failure, SIGTERM/Ctrl-C asking the
loop to stop after the current step, and the progress bar with one plain line per epoch (`format_record`).

The bar never makes the loop wait for the device: the loss it shows is copied behind the step
(`LossReadout`) and formatted when rich draws the bar, in rich's refresh thread."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import torch

from fmashard.errors import UserError, log
from fmashard.train.metrics import fmt


@contextmanager
def compile_guard(active: bool):
    """torch.compile compiles lazily, at the first step: turn a failure there into one line."""
    if not active:
        yield
        return
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - dynamo/inductor raise many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--compile: torch.compile failed on this machine ({type(exc).__name__}: {first}); "
                        "run without --compile") from None


class _StopFlag:
    requested = False


@contextmanager
def stop_signals():
    """SIGTERM / Ctrl-C ask the loop to stop after the current step (it then saves last.pt); a second
    signal stops at once.  Only in the main thread (signal handlers cannot be set elsewhere)."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        log.warning("signal %d: stopping after this step (again to stop now)", signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class LossReadout:
    """The last loss that has reached the host, for the bar, without ever waiting for the device.

    `push` (the loop, after each step) starts a copy of the step's loss into a host scalar: on CUDA into
    pinned memory with `non_blocking=True` and an event; a step whose predecessor's copy has not arrived
    yet is skipped.  `str()` (rich's refresh thread, when it draws the bar) shows the copy once its event
    has completed, else the value before.  Nothing here reads a device tensor."""

    def __init__(self):
        self.host: torch.Tensor | None = None
        self.event = None            # torch.cuda.Event of the copy in flight (None: CPU, or none yet)
        self.shown = "-"

    def _arrived(self) -> bool:
        return self.event is None or self.event.query()

    def push(self, loss: torch.Tensor) -> None:
        if not self._arrived():
            return
        cuda = loss.device.type == "cuda"
        if self.host is None:
            self.host = torch.empty((), dtype=torch.float32, pin_memory=cuda)
        self.host.copy_(loss.detach(), non_blocking=cuda)
        if cuda:
            event = torch.cuda.Event()
            event.record()
            self.event = event

    def __str__(self) -> str:
        if self.host is not None and self._arrived():   # a host scalar whose copy has completed
            self.shown = f"{float(self.host):.4f}"
        return self.shown


class Progress:
    """A rich bar per epoch (terminal only, rank 0) and one plain line per epoch, readable in logs."""

    def __init__(self, config, main: bool):  # a TrainConfig
        self.verbose = config.verbose and main
        show = config.progress
        if show is None:
            show = sys.stdout.isatty() and not os.environ.get("CI")
        self.bar = None
        if show and main:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar
            self.bar = Bar(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                           TimeElapsedColumn(), transient=True)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        self.windows = self.tracks = self.steps = 0
        self.started = time.perf_counter()
        self.loss = LossReadout()
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=done, epoch=f"{epoch + 1}/{epochs}",
                                          loss=self.loss, speed="")

    def advance(self, loss: torch.Tensor, windows: int, tracks: int) -> None:
        """After a step: no read of `loss` here (see LossReadout), only host counters."""
        if self.bar is None:
            return
        self.windows, self.tracks, self.steps = self.windows + windows, self.tracks + tracks, self.steps + 1
        self.loss.push(loss)
        fields = {}
        if self.steps % 5 == 1:
            elapsed = time.perf_counter() - self.started
            fields = {"speed": f"{self.windows / elapsed:.1f} windows/s {self.tracks / elapsed:.2f} tracks/s"}
        self.bar.update(self.task, advance=1, **fields)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()

    def line(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)


def format_record(r: dict, epochs: int) -> str:
    """The line of a metrics.jsonl record, for people."""
    part = "" if r["complete"] else " (partial)"
    return (f"epoch {r['epoch']}/{epochs}{part} step {r['step']} | train loss {fmt(r['train_loss'], 4)} "
            f"acc {fmt(r['train_window_acc'])} | val loss {fmt(r['val_loss'], 4)} acc {fmt(r['val_window_acc'])} "
            f"track vote {fmt(r['val_track_acc_vote'])} mean {fmt(r['val_track_acc_mean'])} | "
            f"{r['windows_per_s']:.1f} windows/s {r['tracks_per_s']:.2f} tracks/s | {r['seconds']:.1f} s"
            + (f" | {r['skipped']} skipped" if r["skipped"] else "")
            + (f" | {r['nonfinite_steps']} non-finite steps skipped" if r.get("nonfinite_steps") else ""))
