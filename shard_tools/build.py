"""`build_shards(config)`: audio + labels (FMA, a table, a folder per class) -> fixed-stride shards (or
the notebook's .pt files), resumable.

    selection -> plan (tracks -> shards, fixed up front) -> keep the shards a previous run finished ->
    one task per remaining shard (shard_tools.shard_task: decode, write tar + sha256 + .idx, commit),
    run by an engine (shard_tools.engines: local process pool or Ray) -> journal each record as it
    arrives -> manifest last.

Output bytes depend only on the arguments in `BuildConfig.identity()`, never on the engine or worker count.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fmashard.errors import UserError, log
from fmashard.format.manifest import MANIFEST_NAME, dump_manifest
from shard_tools.build_config import BuildConfig, ConfigError, parse_size  # noqa: F401 - re-exported
from shard_tools.build_output import BuildOutput, Journal, start_build
from shard_tools.build_plan import plan_shards, probe_clips
from shard_tools.engines import ENGINES
from shard_tools.manifest import make_manifest
from shard_tools.shard_task import ShardTask, shown_path, track_task  # noqa: F401 - re-exported
from shard_tools.splits import check_training, lost_splits, split_warnings


@dataclass
class BuildReport:
    out: str
    layout: str
    tracks_written: int
    tracks_skipped: int
    tracks_decoded: int  # by this run; fewer than planned when shards were kept from a previous run
    shards_built: int
    shards_kept: int
    bytes: int
    seconds: float
    workers: int
    clips_written: int | None = None   # records, when tracks were cut into several clips
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)   # split -> (tracks, clips) written

    @property
    def tracks_per_second(self) -> float:
        return self.tracks_decoded / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        unit = "shards" if self.layout == "shards" else "chunks of files"
        kept = f", {self.shards_kept} {unit} kept from a previous run" if self.shards_kept else ""
        clips = f" ({self.clips_written} clips)" if self.clips_written not in (None, self.tracks_written) else ""
        return (f"{self.out}: {self.tracks_written} tracks written{clips}, {self.tracks_skipped} skipped, "
                f"{self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s, {self.tracks_per_second:.1f} tracks/s "
                f"({self.tracks_decoded} decoded, {self.workers} worker{'s' if self.workers != 1 else ''}{kept})"
                + (f"\n  {self.split_summary()}" if self.splits else ""))

    def split_summary(self) -> str:
        """`training 12 tracks (80 clips), validation 2 tracks (10 clips), test 1 track (8 clips)`."""
        def counts(tracks: int, clips: int) -> str:
            shown = f"{tracks} track{'s' if tracks != 1 else ''}"
            return shown + (f" ({clips} clip{'s' if clips != 1 else ''})" if self.clips_written not in
                            (None, self.tracks_written) else "")
        return ", ".join(f"{split} {counts(*written)}" for split, written in self.splits.items())


def build_shards(config: BuildConfig, progress: bool = False) -> BuildReport:
    started = time.perf_counter()
    selection = load_build_selection(config)
    source = config.corpus or str(Path(config.fma_dir) / "fma_metadata" / "tracks.csv")
    check_training(selection, source)
    warn(split_warnings(selection, source, config.split_ratios))
    out = BuildOutput(config.out)
    try:
        journal = Journal(out, start_build(out, config.identity(), config.overwrite))
        clips = None
        if config.long_tracks == "all":
            clips = probe_clips([t for refs in selection.tracks.values() for t in refs], config.clip_settings)
        plans = plan_shards(selection.tracks, config.samples_per_shard, config.seed, clips)
        records = {p.name: r for p in plans if (r := kept_record(out, journal.load(p.name))) is not None}
        todo = [p for p in plans if p.name not in records]
        tasks = [ShardTask(config, plan) for plan in todo]
        engine = ENGINES[config.engine]
        with track_progress(sum(len(p.tracks) for p in todo), progress) as advance, \
                engine(tasks, config, out, advance) as done:
            for task, record in done:
                journal.save(task.name, record)
                records[task.name] = record
        if not any(records[p.name]["num_samples"] for p in plans):
            journal.discard([p.name for p in plans])  # a rerun, once the audio is there, decodes it all
            raise UserError(nothing_written(config, [s for p in plans for s in records[p.name]["skipped"]]))
        manifest = make_manifest(config, selection, [records[p.name] for p in plans])
        out.write_text(MANIFEST_NAME, dump_manifest(manifest))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"{config.out}: cannot write the build ({exc.strerror or exc}{where})") from None
    finally:
        out.close()
    warn(lost_splits(selection, manifest["splits"], config.out))
    totals = manifest["totals"]
    return BuildReport(config.out, config.layout, totals["tracks_written"], totals["tracks_skipped"],
                       sum(len(p.tracks) for p in todo),
                       len(todo), len(plans) - len(todo), totals["bytes"], time.perf_counter() - started,
                       config.workers, totals["clips_written"],
                       {name: (s["num_tracks"], s["num_samples"]) for name, s in manifest["splits"].items()})


def warn(lines: list[str]) -> None:
    """The build's warnings: one line each on stderr (the `fmashard` logger)."""
    for line in lines:
        log.warning("warning: %s", line)


def load_build_selection(config: BuildConfig):
    """The selection to build, each track with its audio path; every problem with the input is one UserError."""
    if config.corpus:
        from shard_tools.corpus import load_corpus

        return load_corpus(config.corpus, config.split_ratios)
    fma_dir = Path(config.fma_dir)
    if fma_dir.exists() and not fma_dir.is_dir():
        raise UserError(f"{fma_dir}: not a folder (expected the FMA folder holding fma_metadata/)")
    if not fma_dir.is_dir():
        raise UserError(f"{fma_dir}: FMA folder not found (expected fma_metadata/ and fma_{config.subset}/ inside)")
    from shard_tools.fma_metadata import load_selection, with_paths

    try:
        selection = load_selection(fma_dir, config.subset)
    except UserError:
        raise
    except Exception as exc:  # a damaged tracks.csv: pandas/parse errors of every kind
        raise UserError(f"{fma_dir / 'fma_metadata'}: cannot read the FMA metadata "
                        f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if not any(selection.tracks.values()):
        raise UserError(f"{fma_dir}: no tracks selected for subset {config.subset!r}")
    audio_dir = fma_dir / f"fma_{config.subset}"
    if not audio_dir.is_dir():
        raise UserError(f"{audio_dir}: no such folder: subset {config.subset!r} needs its audio files "
                        f"(fma_{config.subset}/ beside fma_metadata/)")
    return with_paths(selection, fma_dir)


def nothing_written(config: BuildConfig, skipped: list[dict]) -> str:
    reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    check = f"--corpus {config.corpus}"
    if config.fma_dir:
        check = f"--fma-dir {config.fma_dir} and --subset {config.subset}"
    return (f"{config.out}: no track written, all {len(skipped)} selected tracks were skipped ({reasons}{more}); "
            f"check {check}")


def task_of(config: BuildConfig, track):
    return track_task(config, track)


# ---------------------------------------------------------------------------- resume
def kept_record(out: BuildOutput, record: dict | None) -> dict | None:
    """A previous run's record, if every file it lists is still there with the recorded size and sha256."""
    if record is None:
        return None
    files = [(f["path"], f["num_bytes"], f["sha256"]) for f in record.get("files", [])]
    if record.get("path"):
        files += [(record["path"], record["num_bytes"], record["sha256"]),
                  (record["index"], record["index_bytes"], record["index_sha256"])]
    for rel, size, sha in files:
        if out.digest(rel) != (size, sha):
            return None
    return record


# ---------------------------------------------------------------------------- progress
@contextmanager
def track_progress(total: int, enabled: bool):
    """A rich progress bar on stderr (tracks/s, ETA); yields `advance()`."""
    if not enabled or not total:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f} tracks/s" if task.speed else "- tracks/s", style="cyan")

    columns = (TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    terminal = _own_stderr()
    try:
        with Progress(*columns, console=Console(file=terminal) if terminal else Console(stderr=True)) as bar:
            task = bar.add_task("build", total=total)
            yield lambda: bar.advance(task)
    finally:
        if terminal:
            terminal.close()


def _own_stderr():
    """A copy of fd 2 for the progress bar: while a track decodes in this process, fd 2 itself is caught
    (`audio.decoder_messages`), and the bar's refresh thread must not end up in a skip reason."""
    try:
        if sys.stderr.fileno() == 2:
            return os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8")
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (pytest's capsys)
        pass
    return None
