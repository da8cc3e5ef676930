"""Decode one track into fixed-length mono clips at the target rate, and encode them with the codec.

decode (soundfile, the file's own rate and channel count; a URL is read through fmashard.storage) ->
mono (mean of channels) -> resample (soxr HQ, skipped when the rates are equal) -> clips of
`clip_samples`: `long_tracks="first"` keeps the first (cut or zero-padded), `"all"` cuts the whole track
into consecutive clips every `hop_samples` and keeps a final partial clip (zero-padded) when it holds at
least `min_seconds` of audio (`clip_starts`).  The true length (after resampling, before any cut or pad)
is kept for each sample's `.json`.

`process_track` is the function the build's worker processes run: it never raises for a bad file,
it returns a `TrackResult` whose `reason` says why the track is skipped.
"""
from __future__ import annotations

import io
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
    long_tracks: str = "first"     # "first": one clip per track; "all": every clip (see clip_starts)
    hop_samples: int | None = None  # "all": samples between clip starts (None: clip_samples)

    @property
    def min_samples(self) -> int:
        return round(self.min_seconds * self.sample_rate)


def clip_starts(num_samples: int, settings: ClipSettings) -> list[int]:
    """Where the clips of a track of `num_samples` (at the target rate) start.  "first": [0].  "all":
    0, hop, 2*hop, ... for every whole clip, then one partial clip (zero-padded) at the next hop if audio
    is left that no whole clip holds and the partial clip holds at least `min_seconds`; a track shorter
    than one clip is one clip (as with "first")."""
    if settings.long_tracks == "first" or num_samples <= settings.clip_samples:
        return [0]
    hop = settings.hop_samples or settings.clip_samples
    starts = list(range(0, num_samples - settings.clip_samples + 1, hop))
    tail = starts[-1] + hop
    uncovered = num_samples - (starts[-1] + settings.clip_samples)   # audio no whole clip holds
    if uncovered > 0 and num_samples - tail >= max(1, settings.min_samples):
        starts.append(tail)
    return starts


@dataclass(frozen=True)
class DecodedTrack:
    audio: np.ndarray  # float32 mono at the target rate: the whole track ("all"), or its first clip's worth
    num_samples: int  # true length at the target rate, before any cut or pad
    source_sample_rate: int
    source_channels: int
    source_frames: int
    clip_samples: int
    starts: tuple[int, ...] = (0,)   # clip starts (clip_starts)

    @property
    def source_duration(self) -> float:
        return self.source_frames / self.source_sample_rate

    def clips(self):
        """Each clip, cut from the audio or zero-padded to `clip_samples`."""
        for start in self.starts:
            yield fix_length(self.audio[start : start + self.clip_samples], self.clip_samples)

    @property
    def clip(self) -> np.ndarray:
        """The first clip (all that "first" keeps)."""
        return next(self.clips())


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


REUSE_BYTES = 1 << 28   # decode buffers up to this size are kept for the next track (per process)
_buffer = np.empty(0, dtype=np.float32)


def read_audio(path) -> tuple[np.ndarray, int, int]:
    """(mono float32, rate, channels); `TrackSkipped` says truthfully why not.  A URL (`http(s)://`,
    `s3://`) is read whole through fmashard.storage and decoded from memory."""
    path = os.fspath(path)
    if "://" in path:
        source = io.BytesIO(_remote_bytes(path))
    elif not os.path.isfile(path):
        raise TrackSkipped("missing audio file" if not os.path.exists(path) else "not a regular file")
    else:
        source = path
    if (source.getbuffer().nbytes if isinstance(source, io.BytesIO) else os.path.getsize(path)) == 0:
        raise TrackSkipped("empty file")
    with decoder_messages() as messages:
        try:
            return _read_mono(source)
        except Exception as exc:  # libsndfile/mpg123 errors, a truncated stream...
            error = exc
    raise TrackSkipped(_unreadable(error, messages))


def _read_mono(source) -> tuple[np.ndarray, int, int]:
    """One whole read, as `soundfile.read` does it (seek to 0, read every frame): libsndfile's MP3 floats
    depend on the read pattern (blocks or a fresh open without the seek differ in the last bit), and this
    is the pattern every earlier build and the tests' independent decode use.  The multi-channel samples
    land in a buffer kept for the next track: 5 min of 44.1 kHz stereo is 106 MB, whose fresh pages cost
    more than the decode's copy into them."""
    global _buffer
    with sf.SoundFile(source) as f:
        channels, rate = f.channels, f.samplerate
        if f.seekable():
            f.seek(0)
        frames = max(f.frames - f.tell(), 0)
        out = None
        if frames * channels * 4 <= REUSE_BYTES:
            if _buffer.size < frames * channels:
                _buffer = np.empty(frames * channels, dtype=np.float32)
            out = _buffer[: frames * channels].reshape(frames, channels)
        data = f.read(frames, dtype="float32", always_2d=True, out=out)
    return np.ascontiguousarray(to_mono(data), dtype=np.float32), rate, channels


def _remote_bytes(url: str) -> bytes:
    from fmashard import storage
    from fmashard.errors import NotFoundError, UserError

    try:
        return storage.read_bytes(url)
    except NotFoundError:
        raise TrackSkipped("missing audio file") from None
    except UserError as exc:   # a bad scheme, a refused or failing read: recorded, not fatal
        raise TrackSkipped(f"cannot read ({exc})") from None


def source_size(path: str) -> int:
    """Bytes of the source file (the `.json`'s `source_bytes`)."""
    if "://" in path:
        from fmashard import storage

        return storage.object_size(path)
    return os.path.getsize(path)


def to_mono(data: np.ndarray) -> np.ndarray:
    """The mean of the channels, in float32.  Stereo as (left + right) * 0.5: bit-identical to
    `mean(axis=1, dtype=float32)` (a float32 sum of two values, then an exact halving) and 3-6x faster
    (numpy's strided reduction over a 2-column array is slow); other channel counts use the mean."""
    if data.shape[1] == 1:
        return data[:, 0]
    if data.shape[1] == 2:
        mono = np.add(data[:, 0], data[:, 1])
        mono *= np.float32(0.5)
        return mono
    return data.mean(axis=1, dtype=np.float32)


def decode_track(path, settings: ClipSettings) -> DecodedTrack:
    """Decode, mix to mono, resample and find the clips; `TrackSkipped` names why a track is unusable."""
    mono, source_rate, channels = read_audio(path)
    frames = len(mono)
    duration = frames / source_rate
    if frames == 0 or duration < settings.min_seconds:
        raise TrackSkipped(f"too short: {duration:.2f} s < {settings.min_seconds:g} s")
    if source_rate != settings.sample_rate:
        mono = soxr.resample(mono, source_rate, settings.sample_rate, quality="HQ")
    num_samples = len(mono)
    return DecodedTrack(
        audio=mono.astype(np.float32, copy=False),
        num_samples=int(num_samples),
        source_sample_rate=int(source_rate),
        source_channels=int(channels),
        source_frames=int(frames),
        clip_samples=settings.clip_samples,
        starts=tuple(clip_starts(int(num_samples), settings)),
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
class EncodedClip:
    payload: bytes  # the encoded clip
    meta: dict      # the sample's .json content
    crc32: int      # of the payload, lets `verify` name the sample whose bytes changed


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    clips: tuple[EncodedClip, ...] = ()  # one per clip_starts entry; () when skipped
    reason: str | None = None  # why the track is skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None

    @property
    def payload(self) -> bytes | None:
        """The first clip's bytes (the only one under long_tracks="first"); None when skipped."""
        return self.clips[0].payload if self.clips else None

    @property
    def meta(self) -> dict | None:
        return self.clips[0].meta if self.clips else None

    @property
    def crc32(self) -> int:
        return self.clips[0].crc32 if self.clips else 0


def process_track(task: TrackTask) -> TrackResult:
    """Worker entry point: never raises for a bad track, returns a skip reason instead."""
    try:
        track = decode_track(task.path, task.settings)
        source_bytes = source_size(task.path)
    except TrackSkipped as exc:
        return TrackResult(task.track_id, reason=str(exc))
    except Exception as exc:  # anything else about one file must not stop the build either
        return TrackResult(task.track_id, reason=f"decode failed: {type(exc).__name__}: {exc}")
    codec, settings = get_codec(task.settings.codec), task.settings
    meta = {
        "track_id": task.track_id,
        "genre": task.genre,
        "label": task.label,
        "sample_rate": settings.sample_rate,
        "num_samples": track.num_samples,
        "source_sample_rate": track.source_sample_rate,
        "source_channels": track.source_channels,
        "source_duration": round(track.source_duration, 6),
        "source_bytes": source_bytes,
    }
    clips = []
    for n, (start, clip) in enumerate(zip(track.starts, track.clips())):
        payload = codec.encode(clip)
        clip_meta = meta if settings.long_tracks == "first" else {
            **meta, "clip": n, "clips": len(track.starts), "start": round(start / settings.sample_rate, 6)}
        clips.append(EncodedClip(payload, clip_meta, zlib.crc32(payload)))
    return TrackResult(task.track_id, clips=tuple(clips))
