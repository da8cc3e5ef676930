"""A small synthetic corpus in FMA's exact on-disk layout, for demos and tests.

`make_demo_corpus` writes `fma_metadata/tracks.csv` (FMA's 52 columns and 3 header lines),
`fma_metadata/genres.csv` and real MP3 clips under `fma_small/XXX/XXXXXX.mp3`.  Each genre is a family
of timbre and rhythm (pitch range, harmonics, noise colour, tempo, envelope), randomised per track, so
a small 1-D CNN learns it from the raw waveform in an epoch or two.  As in the real fma_small, sample
rates and channel counts vary, track 098565 is only ~8 s long and track 099134 holds no audio.  A few
tracks have no genre_top and a few belong to subset 'medium' (without audio, as if only fma_small was
downloaded), so the loader's exclusion rules get exercised.  Same seed, same bytes.
"""
from __future__ import annotations

import os
import struct
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from fmashard.errors import UserError
from shard_tools.fma_metadata import TRACKS_COLUMNS, audio_path

# FMA's 8 fma_small genres with their FMA genre ids, and two real FMA sub-genres of each.
GENRE_IDS = {"Electronic": 15, "Experimental": 38, "Folk": 17, "Hip-Hop": 21, "Instrumental": 1235,
             "International": 2, "Pop": 10, "Rock": 12}
SUBGENRES = {"Electronic": ((181, "Techno"), (236, "IDM")),
             "Experimental": ((32, "Noise"), (47, "Drone")),
             "Folk": ((33, "Psych-Folk"), (103, "Singer-Songwriter")),
             "Hip-Hop": ((100, "Alternative Hip-Hop"), (539, "Rap")),
             "Instrumental": ((18, "Soundtrack"), (107, "Ambient")),
             "International": ((46, "Latin America"), (77, "French")),
             "Pop": ((76, "Experimental Pop"), (362, "Synth Pop")),
             "Rock": ((25, "Punk"), (66, "Indie-Rock"))}
GENRE_NAMES = tuple(GENRE_IDS)

CLIP_SECONDS = 30.0
SHORT_TRACK_ID, SHORT_TRACK_SECONDS = 98565, 8.0  # real fma_small ids: a short clip, an empty one
BROKEN_TRACK_ID = 99134
SPECIAL_SECONDS = {SHORT_TRACK_ID: SHORT_TRACK_SECONDS, BROKEN_TRACK_ID: 0.0}
NO_GENRE_TRACKS = 3
MEDIUM_TRACKS = 3
NOISE_LOOP_SAMPLES = 65_536
MIN_TRACKS_PER_GENRE = 10  # 80/10/10 gives every split at least one track
MAX_TRACKS_PER_GENRE = 1000  # a demo: 8 x 1000 clips is about 2 GB of MP3s, and 6-digit track ids
# (sample_rate, channels) by position among the audio files: mostly 44.1 kHz stereo, like FMA.
FORMAT_CYCLE = ((44100, 2), (44100, 2), (44100, 2), (22050, 1), (44100, 2),
                (48000, 2), (44100, 2), (44100, 2), (22050, 1), (44100, 2))


@dataclass(frozen=True)
class Timbre:
    """A genre's family of sounds; every track varies it a little."""

    base_hz: float
    harmonics: int
    rolloff: float      # harmonic k has amplitude k**-rolloff
    bpm: float
    attack_s: float     # per-beat envelope: linear attack, exponential decay
    decay_s: float
    noise_colour: float  # 0 white, 1 pink, 2 brown
    noise_level: float


# Base pitches half an octave apart (110 Hz .. 1245 Hz); tempo and envelope differ too.
TIMBRES = {
    "Electronic": Timbre(440.0, 6, 1.0, 128, 0.005, 0.12, 0.0, 0.05),
    "Experimental": Timbre(1244.5, 2, 0.5, 70, 0.05, 0.60, 0.0, 0.30),
    "Folk": Timbre(311.1, 8, 2.0, 96, 0.01, 0.35, 2.0, 0.03),
    "Hip-Hop": Timbre(110.0, 4, 1.5, 88, 0.002, 0.20, 1.0, 0.10),
    "Instrumental": Timbre(220.0, 5, 2.5, 60, 0.40, 3.00, 1.0, 0.02),
    "International": Timbre(622.3, 7, 1.2, 112, 0.01, 0.15, 1.0, 0.05),
    "Pop": Timbre(880.0, 3, 1.0, 120, 0.02, 0.40, 0.0, 0.03),
    "Rock": Timbre(155.6, 12, 0.8, 140, 0.005, 0.60, 0.0, 0.12),
}


@dataclass(frozen=True)
class DemoCorpusConfig:
    """What `fmashard demo-data` writes; validated on construction."""

    out_dir: Path
    genres: int = 8
    tracks_per_genre: int = 20
    seed: int = 0
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))  # encoding threads

    def __post_init__(self) -> None:
        if not 1 <= self.genres <= len(GENRE_NAMES):
            raise UserError(f"genres must be between 1 and {len(GENRE_NAMES)}, got {self.genres}")
        if self.tracks_per_genre < MIN_TRACKS_PER_GENRE:
            raise UserError(f"tracks_per_genre must be at least {MIN_TRACKS_PER_GENRE} so that the "
                            f"80/10/10 split gives every split a track, got {self.tracks_per_genre}")
        if self.tracks_per_genre > MAX_TRACKS_PER_GENRE:
            raise UserError(f"tracks_per_genre must be at most {MAX_TRACKS_PER_GENRE} for a demo corpus, "
                            f"got {self.tracks_per_genre}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class DemoTrack:
    """One row of the demo tracks.csv and how its clip sounds."""

    track_id: int
    genre: str | None   # genre_top; None for the tracks FMA could not give a single top genre
    family: str         # the timbre family of its audio
    subset: str
    split: str
    sample_rate: int
    channels: int
    seconds: float      # 0.0: a file with no audio

    @property
    def has_audio_file(self) -> bool:
        return self.subset == "small"


@dataclass(frozen=True)
class DemoSummary:
    """What was written: counts per genre and split, audio formats, special tracks, bytes."""

    out_dir: Path
    counts: dict[str, dict[str, int]]     # genre -> split -> small-subset tracks with that genre_top
    formats: dict[tuple[int, int], int]   # (sample_rate, channels) -> decodable MP3 files
    short_track_id: int
    broken_track_id: int
    no_genre_track_ids: tuple[int, ...]
    medium_track_ids: tuple[int, ...]
    total_bytes: int
    seconds: float

    @property
    def num_tracks(self) -> int:
        return sum(sum(splits.values()) for splits in self.counts.values())

    def format(self) -> str:
        """A table for the terminal."""
        lines = [f"demo corpus in {self.out_dir}: {self.num_tracks} tracks with a genre in fma_small, "
                 f"{self.total_bytes / 1e6:.1f} MB, {self.seconds:.1f} s",
                 f"{'genre':<14}{'training':>10}{'validation':>12}{'test':>6}"]
        for genre, splits in self.counts.items():
            lines.append(f"{genre:<14}{splits['training']:>10}{splits['validation']:>12}"
                         f"{splits['test']:>6}")
        lines.append("audio: " + ", ".join(f"{n} x {rate} Hz {'stereo' if ch == 2 else 'mono'}"
                                           for (rate, ch), n in self.formats.items()))
        lines.append(f"special: {self.short_track_id:06d} is {SHORT_TRACK_SECONDS:.0f} s long, "
                     f"{self.broken_track_id:06d} has no audio")
        lines.append("excluded: no genre_top " + _ids(self.no_genre_track_ids)
                     + "; subset medium (no audio) " + _ids(self.medium_track_ids))
        return "\n".join(lines)


def make_demo_corpus(out_dir: str | Path, genres: int = 8, tracks_per_genre: int = 20,
                     seed: int = 0) -> DemoSummary:
    """Write the demo corpus into the new or empty folder `out_dir`."""
    return write_demo_corpus(DemoCorpusConfig(Path(out_dir), genres, tracks_per_genre, seed))


def write_demo_corpus(config: DemoCorpusConfig) -> DemoSummary:
    """Write audio first and tracks.csv last, so a finished corpus is one with a tracks.csv."""
    started = time.perf_counter()
    tracks = plan_demo_tracks(config.genres, config.tracks_per_genre, config.seed)  # before any folder
    out_dir = _prepare_out_dir(config.out_dir)
    with_audio = [track for track in tracks if track.has_audio_file]
    with ThreadPoolExecutor(config.workers) as pool:  # libsndfile releases the GIL while encoding
        audio_bytes = sum(pool.map(lambda track: write_track_audio(track, out_dir, config.seed),
                                   with_audio))
    metadata = out_dir / "fma_metadata"
    metadata.mkdir(exist_ok=True)
    rows = metadata_rows(tracks, config.seed)
    csv_bytes = write_genres_csv(rows, metadata / "genres.csv")
    csv_bytes += write_tracks_csv(tracks, rows, metadata / "tracks.csv")
    return _summarize(out_dir, tracks, audio_bytes + csv_bytes, time.perf_counter() - started)


def plan_demo_tracks(genres: int, tracks_per_genre: int, seed: int) -> list[DemoTrack]:
    """Every track of the corpus, sorted by track_id; cheap and deterministic from the seed."""
    rng = np.random.default_rng(seed)
    names = GENRE_NAMES[:genres]
    rows: list[tuple[str | None, str, str]] = []  # (genre_top, subset, split)
    for name in names:
        held_out = max(1, round(tracks_per_genre / 10))
        splits = ["training"] * (tracks_per_genre - 2 * held_out) + ["validation", "test"] * held_out
        rows += [(name, "small", split) for split in splits]
    short_row = rows.pop(0)  # both special tracks replace a training track of their genre
    broken_row = rows.pop(rows.index((names[1 % genres], "small", "training")))
    rows += [(None, "small", ("training", "validation", "test")[i % 3]) for i in range(NO_GENRE_TRACKS)]
    rows += [(names[i % genres], "medium", "training") for i in range(MEDIUM_TRACKS)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    track_ids = _track_ids(rng, len(rows))
    families = [genre or names[int(rng.integers(genres))] for genre, _, _ in rows]
    planned = [(int(tid), row, family) for tid, row, family in zip(track_ids, rows, families)]
    planned += [(SHORT_TRACK_ID, short_row, short_row[0]), (BROKEN_TRACK_ID, broken_row, broken_row[0])]
    return _assign_formats(sorted(planned, key=lambda item: item[0]))


def render_clip(track: DemoTrack, seed: int) -> np.ndarray:
    """The float32 (samples, channels) waveform of a track, deterministic from (seed, track_id)."""
    rng = np.random.default_rng([seed, track.track_id])
    timbre, sr = TIMBRES[track.family], track.sample_rate
    period_s = 60.0 / (timbre.bpm * rng.uniform(0.94, 1.06))
    beats = (np.arange(round(track.seconds * sr)) / sr + rng.uniform(0, period_s)) / period_s
    beat = beats.astype(np.int64)
    tone = _melody(rng, timbre, beat, sr)
    envelope = _beat_envelope(((beats - beat) * period_s).astype(np.float32), timbre)
    amplitude = rng.uniform(0.25, 0.5)
    noise_level = np.float32(timbre.noise_level * rng.uniform(0.7, 1.3))
    channels = []
    for gain in (1.0, rng.uniform(0.8, 1.0))[: track.channels]:
        noise = _coloured_noise(rng, tone.size, timbre.noise_colour)
        channels.append(np.float32(amplitude * gain) * envelope * (tone + noise_level * noise))
    return np.clip(np.stack(channels, axis=1), -1.0, 1.0)


def _melody(rng: np.random.Generator, timbre: Timbre, beat: np.ndarray, sr: int) -> np.ndarray:
    """One note per beat near the track's pitch, with the genre's harmonics; peak 1."""
    notes = rng.choice([0, 2, 3], size=int(beat[-1]) + 1)  # semitones above f0
    f0 = timbre.base_hz * 2 ** (rng.uniform(-1, 1) / 12)
    phase_step = 2 * np.pi / sr * f0 * 2 ** (notes / 12)
    phase = np.mod(np.cumsum(phase_step[beat]), 2 * np.pi).astype(np.float32)  # wrapped: exact in f32
    tone = np.zeros(beat.size, dtype=np.float32)
    top_hz = min(0.45 * sr, 10_000.0)  # the same content at every sample rate, no aliasing
    for k in range(1, timbre.harmonics + 1):
        if k * f0 * 2 ** (3 / 12) < top_hz:
            offset = np.float32(rng.uniform(0, 2 * np.pi))
            tone += np.float32(k**-timbre.rolloff) * np.sin(k * phase + offset)
    return tone / (np.abs(tone).max() + np.float32(1e-9))


def _beat_envelope(in_beat_s: np.ndarray, timbre: Timbre) -> np.ndarray:
    """Linear attack then exponential decay, restarting every beat, never below 0.2."""
    attack = np.minimum(in_beat_s / np.float32(timbre.attack_s), np.float32(1.0))
    return np.float32(0.2) + np.float32(0.8) * attack * np.exp(-in_beat_s / np.float32(timbre.decay_s))


def write_track_audio(track: DemoTrack, fma_dir: Path, seed: int) -> int:
    """Encode a track's clip as MP3 (or its tag-only file) under fma_small; returns bytes written."""
    path = audio_path(fma_dir, track.subset, track.track_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if track.seconds == 0.0:
        path.write_bytes(_id3_tag_only(f"{track.track_id:06d}: no audio"))
    else:
        sf.write(path, render_clip(track, seed), track.sample_rate, format="MP3")
    return path.stat().st_size


def write_tracks_csv(tracks: list[DemoTrack], rows: list[dict], path: Path) -> int:
    """FMA's tracks.csv: 52 columns, 3 header lines (group, column, track_id); returns bytes."""
    cells = [[_cell(row.get(column)) for column in TRACKS_COLUMNS] for row in rows]
    index = pd.Index([track.track_id for track in tracks], name="track_id")
    frame = pd.DataFrame(cells, index=index, columns=pd.MultiIndex.from_tuples(TRACKS_COLUMNS),
                         dtype=object)
    frame.to_csv(path, lineterminator="\n")
    return path.stat().st_size


def write_genres_csv(rows: list[dict], path: Path) -> int:
    """FMA's genres.csv (genre_id,#tracks,parent,title,top_level), counts from `rows`; returns bytes."""
    counts = Counter(gid for row in rows for gid in row[("track", "genres_all")])
    genres = [(top, 0, name, top) for name, top in GENRE_IDS.items()]
    genres += [(gid, top, title, top) for name, top in GENRE_IDS.items() for gid, title in SUBGENRES[name]]
    lines = ["genre_id,#tracks,parent,title,top_level"]
    lines += [f"{gid},{counts[gid]},{parent},{title},{top}" for gid, parent, title, top in sorted(genres)]
    path.write_text("\n".join(lines) + "\n", newline="\n")
    return path.stat().st_size


def metadata_rows(tracks: list[DemoTrack], seed: int) -> list[dict]:
    """Plausible FMA values per track, {(group, column): value}; list columns hold lists."""
    rng = np.random.default_rng([seed, 1])
    rows = []
    for track in tracks:
        top_id = GENRE_IDS[track.family]
        sub_id, _ = SUBGENRES[track.family][int(rng.integers(2))]
        artist_id = 10 * (GENRE_NAMES.index(track.family) + 1) + int(rng.integers(1, 4))
        album_id = 10 * artist_id + int(rng.integers(2))
        if track.genre is None:  # FMA leaves genre_top empty when genres span two top genres
            other = [GENRE_IDS[g] for g in GENRE_NAMES if GENRE_IDS[g] != top_id][int(rng.integers(7))]
            genres = sorted({top_id, other})
        else:
            genres = [top_id] if rng.random() < 0.5 else sorted([top_id, sub_id])
        full_s = 8 if track.track_id == SHORT_TRACK_ID else int(rng.integers(90, 400))  # whole track
        created = np.datetime64("2008-11-25T17:00:00") + np.timedelta64(track.track_id * 397, "s")
        rows.append({
            ("album", "comments"): 0, ("album", "date_created"): _date(created, -86_400),
            ("album", "date_released"): _date(created, -30 * 86_400)[:10] + " 00:00:00",
            ("album", "favorites"): int(rng.integers(0, 5)), ("album", "id"): album_id,
            ("album", "information"): "<p></p>", ("album", "listens"): int(rng.integers(500, 20_000)),
            ("album", "tags"): [], ("album", "title"): f"Demo Album {album_id}",
            ("album", "tracks"): int(rng.integers(4, 13)), ("album", "type"): "Album",
            ("artist", "active_year_begin"): "2006-01-01 00:00:00", ("artist", "comments"): 0,
            ("artist", "date_created"): _date(created, -2 * 86_400),
            ("artist", "favorites"): int(rng.integers(0, 20)), ("artist", "id"): artist_id,
            ("artist", "latitude"): round(float(rng.uniform(-60, 70)), 4),
            ("artist", "longitude"): round(float(rng.uniform(-150, 150)), 4),
            ("artist", "location"): "Demo City", ("artist", "name"): f"Demo Artist {artist_id}",
            ("artist", "tags"): [track.family.lower()],
            ("set", "split"): track.split, ("set", "subset"): track.subset,
            ("track", "bit_rate"): int(rng.choice([192_000, 256_000, 320_000])),
            ("track", "comments"): 0, ("track", "date_created"): _date(created, 0),
            ("track", "duration"): full_s,
            ("track", "favorites"): int(rng.integers(0, 5)), ("track", "genre_top"): track.genre,
            ("track", "genres"): genres, ("track", "genres_all"): genres,
            ("track", "interest"): int(rng.integers(100, 5_000)), ("track", "language_code"): "en",
            ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
            ("track", "listens"): int(rng.integers(50, 5_000)), ("track", "number"): int(rng.integers(1, 9)),
            ("track", "tags"): [], ("track", "title"): f"{track.family} study {track.track_id}",
        })
    return rows


def _cell(value: object) -> object:
    """List columns are written as Python literals, like FMA's `[21]` and `['rock']`."""
    return repr(value) if isinstance(value, list) else value


def _track_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """FMA-like ids: start at 2, irregular steps, never one of the special ids."""
    steps = rng.integers(1, 60, size=count + 2)
    steps[0] = 0
    ids = 2 + np.cumsum(steps)
    return ids[~np.isin(ids, list(SPECIAL_SECONDS))][:count]


def _assign_formats(planned: list[tuple[int, tuple, str]]) -> list[DemoTrack]:
    """Formats cycle over the clips in track_id order; the two special tracks are 44.1 kHz stereo."""
    tracks, clips = [], 0
    for track_id, (genre, subset, split), family in planned:
        special = track_id in SPECIAL_SECONDS
        rate, channels = (44100, 2) if special else FORMAT_CYCLE[clips % len(FORMAT_CYCLE)]
        clips += subset == "small" and not special
        seconds = SPECIAL_SECONDS.get(track_id, CLIP_SECONDS)
        tracks.append(DemoTrack(track_id, genre, family, subset, split, rate, channels, seconds))
    return tracks


def _coloured_noise(rng: np.random.Generator, size: int, colour: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f**colour: a 1.5 s loop, cheap to make."""
    spectrum = np.fft.rfft(rng.standard_normal(NOISE_LOOP_SAMPLES))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    loop = np.fft.irfft(spectrum / freqs ** (colour / 2), n=NOISE_LOOP_SAMPLES)
    loop = (loop / np.sqrt(np.mean(loop**2))).astype(np.float32)
    return np.resize(loop, size)


def _id3_tag_only(title: str) -> bytes:
    """An ID3v2.3 tag with a title and no audio frame after it: no decoder finds audio."""
    text = b"\x03" + title.encode()
    frame = b"TIT2" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(frame)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + syncsafe + frame


def _prepare_out_dir(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir}: folder is not empty; the demo corpus needs a new or empty folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create folder ({exc.strerror})") from None
    return out_dir


def _summarize(out_dir: Path, tracks: list[DemoTrack], total_bytes: int, seconds: float) -> DemoSummary:
    counts: dict[str, dict[str, int]] = {}
    for track in tracks:
        if track.genre is not None and track.subset == "small":
            splits = counts.setdefault(track.genre, {"training": 0, "validation": 0, "test": 0})
            splits[track.split] += 1
    formats = Counter((t.sample_rate, t.channels) for t in tracks if t.has_audio_file and t.seconds)
    return DemoSummary(
        out_dir=out_dir, counts=dict(sorted(counts.items())), formats=dict(formats.most_common()),
        short_track_id=SHORT_TRACK_ID, broken_track_id=BROKEN_TRACK_ID,
        no_genre_track_ids=tuple(t.track_id for t in tracks if t.genre is None),
        medium_track_ids=tuple(t.track_id for t in tracks if t.subset == "medium"),
        total_bytes=total_bytes, seconds=seconds)


def _date(base: np.datetime64, offset_s: int) -> str:
    return str(base + np.timedelta64(offset_s, "s")).replace("T", " ")


def _ids(track_ids: tuple[int, ...]) -> str:
    return ", ".join(f"{tid:06d}" for tid in track_ids) or "none"

