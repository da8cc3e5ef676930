"""Decode one track into a fixed-length mono clip at the target rate, and encode it with its codec.

decode (soundfile, the file's own rate and channel count) -> mono (mean of channels) ->
resample (soxr HQ, skipped when the rates are equal) -> cut or zero-pad to `clip_samples`.
The true length (after resampling, before the cut or pad) is kept for the sample's `.json`.

`process_track` is the function the build's worker processes run: it never raises for a bad file,
it returns a `TrackResult` whose `reason` says why the track is skipped.
"""
from __future__ import annotations

import os
import sys
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from fmashard.format.codecs import get_codec


@dataclass(frozen=True)
class ClipSettings:
    """What every track is turned into; `codec` names an entry of `fmashard.format.codecs` ("float32"
    keeps the float clip: files layout)."""

    sample_rate: int
    clip_samples: int
    min_seconds: float
    codec: str = "pcm16"


@dataclass(frozen=True)
class DecodedTrack:
    clip: np.ndarray  # float32, shape (clip_samples,)
    num_samples: int  # true length at the target rate, before the cut or pad
    source_sample_rate: int
    source_channels: int
    source_frames: int

    @property
    def source_duration(self) -> float:
        return self.source_frames / self.source_sample_rate


class TrackSkipped(Exception):
    """A track that does not make it into the output; the message is the manifest's reason."""


def fix_length(x: np.ndarray, clip_samples: int) -> np.ndarray:
    """Cut to `clip_samples`, or zero-pad at the end."""
    if len(x) >= clip_samples:
        return x[:clip_samples]
    return np.concatenate([x, np.zeros(clip_samples - len(x), dtype=x.dtype)])


@contextmanager
def decoder_messages():
    """Catch what the C decoders print on fd 2 (libmpg123's "Illegal Audio-MPEG-Header" notes), so it
    stays off the terminal (and the progress bar); yields a list that receives the lines."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode("utf-8", "replace").splitlines()


def _unreadable(exc: Exception, messages: list[str]) -> str:
    """The skip reason of a file that exists but does not decode: libsndfile's reason (unless it is its
    misleading "does not exist or is not a regular file" for an unrecognised format), the decoder's notes."""
    reason = getattr(exc, "error_string", None) or str(exc)
    if "not a regular file" in reason or "does not exist" in reason:
        reason = "format not recognised"
    notes = [line.removeprefix("Note: ").strip() for line in messages]
    notes = [n for n in dict.fromkeys(notes) if n and not n.startswith(("Trying to resync", "Hit end of"))]
    return f"unreadable audio ({'; '.join([reason.rstrip('.'), *notes[:2]])[:300]})"


def read_audio(path) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate); `TrackSkipped` says truthfully why not."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TrackSkipped("missing audio file" if not os.path.exists(path) else "not a regular file")
    if os.path.getsize(path) == 0:
        raise TrackSkipped("empty file")
    with decoder_messages() as messages:
        try:
            return sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile/mpg123 errors, a truncated stream...
            error = exc
    raise TrackSkipped(_unreadable(error, messages))


def decode_track(path, settings: ClipSettings) -> DecodedTrack:
    """Decode, mix to mono, resample and fix the length; `TrackSkipped` names why a track is unusable."""
    data, source_rate = read_audio(path)
    frames, channels = data.shape
    duration = frames / source_rate
    if frames == 0 or duration < settings.min_seconds:
        raise TrackSkipped(f"too short: {duration:.2f} s < {settings.min_seconds:g} s")
    mono = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if source_rate != settings.sample_rate:
        mono = soxr.resample(mono, source_rate, settings.sample_rate, quality="HQ")
    return DecodedTrack(
        clip=fix_length(mono.astype(np.float32, copy=False), settings.clip_samples),
        num_samples=len(mono),
        source_sample_rate=int(source_rate),
        source_channels=int(channels),
        source_frames=int(frames),
    )


@dataclass(frozen=True)
class TrackTask:
    """One unit of work for a worker process (small and picklable)."""

    track_id: int
    genre: str
    label: int
    path: str
    settings: ClipSettings


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    payload: bytes | None = None  # the encoded clip; None when skipped
    meta: dict | None = None  # the sample's .json content
    crc32: int = 0  # of the payload, lets `verify` name the sample whose bytes changed
    reason: str | None = None  # why the track is skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None


def process_track(task: TrackTask) -> TrackResult:
    """Worker entry point: never raises for a bad track, returns a skip reason instead."""
    try:
        track = decode_track(task.path, task.settings)
        source_bytes = os.path.getsize(task.path)
    except TrackSkipped as exc:
        return TrackResult(task.track_id, reason=str(exc))
    except Exception as exc:  # anything else about one file must not stop the build either
        return TrackResult(task.track_id, reason=f"decode failed: {type(exc).__name__}: {exc}")
    payload = get_codec(task.settings.codec).encode(track.clip)
    meta = {
        "track_id": task.track_id,
        "genre": task.genre,
        "label": task.label,
        "sample_rate": task.settings.sample_rate,
        "num_samples": track.num_samples,
        "source_sample_rate": track.source_sample_rate,
        "source_channels": track.source_channels,
        "source_duration": round(track.source_duration, 6),
        "source_bytes": source_bytes,
    }
    return TrackResult(task.track_id, payload=payload, meta=meta, crc32=zlib.crc32(payload))
