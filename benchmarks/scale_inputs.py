"""`scale.py`'s synthetic inputs, made with the project's own writers so the measured code paths are the real ones.

- `write_fma_corpus`: an FMA folder whose `fma_metadata/tracks.csv` has `rows` rows in FMA's exact format (52
  columns, 3 header lines; rows from `shard_tools.demo_corpus.metadata_rows`), FMA's subset sizes scaled to
  `rows` (8,000 small and 25,000 medium of 106,574) and about half the tracks without a genre_top.  With
  `sparse_audio`, every track also gets a file at its fma_full path: a WAV header promising the track's
  duration (tracks.csv's `track.duration`) over a sparse file, so `--long-tracks all` plans from real headers
  while the disk holds only the headers.
- `write_scale_shards`: a manifest of `shards` shards and `samples` samples (sha256 and per-sample crc32 as a
  build writes them), whose shard files are one or two real shards (`shard_tools.tar_writer`) and symbolic links
  to them: the loader reads real records while the disk holds at most two shards.
- `write_tiny_corpus`: tables of the first N of a set of 1-s WAV files (the Ray row's tiny shards).
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fmashard.format.manifest import FORMAT_VERSION, dump_manifest
from fmashard.format.tar import key_of, record_bytes
from shard_tools.demo_corpus import (
    GENRE_NAMES,
    DemoTrack,
    metadata_rows,
    write_genres_csv,
    write_tracks_csv,
)
from shard_tools.fma_metadata import audio_path
from shard_tools.tar_writer import ShardWriter

FMA_FULL_TRACKS = 106_574
FMA_SMALL, FMA_MEDIUM = 8_000, 25_000      # FMA's subsets are nested: small in medium in large
FMA_MAX_TRACK_ID = 155_320                 # FMA's ids run from 2 to 155,320 with gaps
GENRE_FRACTION = 0.47                      # about half of fma_large has a single top genre (genre_top)
BIO_COLUMN = ("artist", "bio")
SAMPLE_RATE = 22_050


# ---------------------------------------------------------------------------------------- FMA metadata
def fma_tracks(rows: int, seed: int = 0) -> list[DemoTrack]:
    """`rows` tracks with FMA's proportions of subsets, splits (80/10/10) and genre_top, sorted by id."""
    rng = np.random.default_rng([seed, rows])
    ids = np.sort(rng.choice(np.arange(2, max(FMA_MAX_TRACK_ID, 2 * rows) + 1), size=rows, replace=False))
    small, medium = round(rows * FMA_SMALL / FMA_FULL_TRACKS), round(rows * FMA_MEDIUM / FMA_FULL_TRACKS)
    subsets = np.array(["small"] * small + ["medium"] * (medium - small) + ["large"] * (rows - medium))
    rng.shuffle(subsets)
    splits = rng.choice(["training", "validation", "test"], size=rows, p=[0.8, 0.1, 0.1])
    families = rng.integers(len(GENRE_NAMES), size=rows)
    with_genre = (subsets != "large") | (rng.random(rows) < _large_genre_fraction(rows, medium))
    return [DemoTrack(int(tid), GENRE_NAMES[fam] if genre else None, GENRE_NAMES[fam], str(subset), str(split),
                      SAMPLE_RATE, 1, 30.0)
            for tid, subset, split, fam, genre in zip(ids, subsets, splits, families, with_genre)]


def _large_genre_fraction(rows: int, medium: int) -> float:
    """Of the tracks only in `large`, the share with a genre_top that makes GENRE_FRACTION overall."""
    return max(0.0, min(1.0, (GENRE_FRACTION * rows - medium) / max(1, rows - medium)))


def write_fma_corpus(fma_dir: Path, rows: int, seed: int = 0, bio_bytes: int = 0, sparse_audio: bool = False) -> dict:
    """An FMA folder with a `rows`-row tracks.csv (and genres.csv, and an fma_full/ folder); kept when it exists."""
    tracks_csv = fma_dir / "fma_metadata" / "tracks.csv"
    (fma_dir / "fma_full").mkdir(parents=True, exist_ok=True)
    tracks = fma_tracks(rows, seed)
    table = metadata_rows(tracks, seed) if sparse_audio or not tracks_csv.exists() else []
    if not tracks_csv.exists():
        if bio_bytes:   # FMA's free text (biographies, album notes); the demo writes none
            text = ("<p>" + "an artist from the demo city " * (bio_bytes // 30 + 1))[:bio_bytes]
            table = [{**row, BIO_COLUMN: text} for row in table]
        tracks_csv.parent.mkdir(parents=True, exist_ok=True)
        write_genres_csv(table, tracks_csv.parent / "genres.csv")
        partial = tracks_csv.with_suffix(".partial")
        write_tracks_csv(tracks, table, partial)
        partial.rename(tracks_csv)
    audio = write_sparse_audio(fma_dir, tracks, [row[("track", "duration")] for row in table]) if sparse_audio else 0
    return {"rows": rows, "tracks_csv_bytes": tracks_csv.stat().st_size, "sparse_audio_files": audio,
            "with_genre_top": sum(t.genre is not None for t in tracks)}


def write_sparse_audio(fma_dir: Path, tracks: list[DemoTrack], seconds: list[int]) -> int:
    """At each selected track's fma_full path: a mono 22,050 Hz WAV header for its `seconds` (tracks.csv's
    duration), the data sparse (no blocks on disk).  Returns the number of files (existing ones are kept)."""
    count = 0
    for track, duration in zip(tracks, seconds):
        if track.genre is None:
            continue
        path = audio_path(fma_dir, "full", track.track_id)
        count += 1
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        data_bytes = int(duration) * SAMPLE_RATE * 2
        with open(path, "wb") as f:
            f.write(_wav_header(data_bytes))
            f.truncate(44 + data_bytes)
    return count


def _wav_header(data_bytes: int, rate: int = SAMPLE_RATE) -> bytes:
    """RIFF/WAVE, PCM 16-bit mono."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


# ---------------------------------------------------------------------------------------- shards + manifest
def write_scale_shards(root: Path, shards: int, samples: int, clip_samples: int, seed: int = 0) -> Path:
    """root/manifest.json listing `shards` shards of `samples` samples in all (sizes differ by at most one);
    kept when it exists.  Each shard path is a symbolic link to one of (at most) two real shard files."""
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        return manifest_path
    (root / "training").mkdir(parents=True, exist_ok=True)
    sample_bytes = clip_samples * 2
    base, extra = divmod(samples, shards)
    real = {count: _real_shard(root, count, clip_samples, seed) for count in {base + 1, base} if count}
    rng = np.random.default_rng([seed, shards])
    entries = []
    for i in range(shards):
        count = base + (i < extra)
        name = f"training/training-{i:06d}"
        target, result = real[count]
        for ext in ("tar", "idx"):
            link = root / f"{name}.{ext}"
            if not link.is_symlink():
                os.symlink(f"{target}.{ext}", link)
        entries.append({"path": f"{name}.tar", "index": f"{name}.idx", "num_samples": count,
                        "num_bytes": result["num_bytes"], "sha256": rng.bytes(32).hex(),   # distinct, as in a build
                        "crc32": result["crc32"]})
    manifest = _manifest(entries, samples, clip_samples, sample_bytes)
    partial = manifest_path.with_suffix(".partial")
    partial.write_text(dump_manifest(manifest))
    partial.rename(manifest_path)
    return manifest_path


def _real_shard(root: Path, count: int, clip_samples: int, seed: int) -> tuple[str, dict]:
    """A real shard of `count` records of noise (clip `clip_samples`), in root/real/; (name, its record)."""
    name = f"real/shard-{count}"
    tar, record_file = root / f"{name}.tar", root / f"{name}.json"
    if not record_file.exists():
        tar.parent.mkdir(exist_ok=True)
        rng = np.random.default_rng([seed, count])
        writer = ShardWriter(tar, root / f"{name}.idx", "pcm", clip_samples * 2)
        for i in range(count):
            audio = rng.integers(-3000, 3000, clip_samples, dtype=np.int16).astype("<i2").tobytes()
            label = i % len(GENRE_NAMES)
            writer.add(key_of(2 + i), label, {"track_id": 2 + i, "label": label}, audio, zlib.crc32(audio))
        result = writer.commit()
        record_file.write_text(json.dumps({"num_bytes": result.num_bytes, "crc32": result.crc32}))
    return f"../{name}", json.loads(record_file.read_text())


def _manifest(entries: list[dict], samples: int, clip_samples: int, sample_bytes: int) -> dict:
    return {"format": "fmashard", "format_version": FORMAT_VERSION, "layout": "shards",
            "params": {"subset": "full", "sample_rate": SAMPLE_RATE, "clip_seconds": clip_samples / SAMPLE_RATE,
                       "min_seconds": 0.0, "codec": "pcm16", "shard_size": 268435456, "seed": 0,
                       "long_tracks": "all", "clip_hop_seconds": clip_samples / SAMPLE_RATE},
            "source": {"kind": "fma", "split_by": "fma", "split_ratios": None},
            "codec": "pcm16", "dtype": "int16", "sample_rate": SAMPLE_RATE, "clip_samples": clip_samples,
            "sample_bytes": sample_bytes, "record_bytes": record_bytes(sample_bytes), "vocabulary": list(GENRE_NAMES),
            "splits": {"training": {"num_samples": samples, "num_tracks": samples,
                                    "num_bytes": sum(e["num_bytes"] for e in entries), "shards": entries}},
            "totals": {"tracks_written": samples, "clips_written": samples, "tracks_skipped": 0,
                       "bytes": sum(e["num_bytes"] for e in entries), "excluded_no_genre": 0},
            "skipped": []}


# ---------------------------------------------------------------------------------------- tiny tracks (Ray)
def write_tiny_corpus(root: Path, sizes: list[int], seconds: float = 1.0, seed: int = 0) -> Path:
    """root/tracks-N.csv for each N in `sizes` (path,label,split: all training, two labels): the first N of
    max(sizes) mono WAVs of `seconds` each under root/audio/ (files that exist are kept)."""
    import soundfile as sf

    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["path,label,split"]
    for i in range(max(sizes)):
        rel = f"audio/{i:06d}.wav"
        clip = (rng.standard_normal(round(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
        if not (root / rel).exists():
            sf.write(root / rel, clip, SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"{rel},{('low', 'high')[i % 2]},training")
    for size in sizes:
        (root / f"tracks-{size}.csv").write_text("\n".join(lines[: size + 1]) + "\n")
    return root
