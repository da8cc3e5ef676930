"""Codec fidelity: SNR of mulaw8 against pcm16 (and f16) on the real FMA clip and on demo-corpus audio,
bytes per track, and what decoding a batch costs on the device stage.

    .venv/bin/python benchmarks/codec_fidelity.py [--tracks 16] [--rounds 7] [--out results/codec_fidelity.json]

Method: each clip is what the build stores before encoding: float32 mono at 22,050 Hz, 30 s (the real
clip: ../shared/fixtures/fma_small/000/000002.mp3 decoded with soundfile, the channels averaged, soxr HQ
44.1 -> 22.05 kHz; the demo tracks: `shard_tools.demo_corpus.render_clip` of the first `--tracks` tracks of
an 8-genre demo plan, the waveform the demo corpus encodes as MP3, mixed and resampled alike).  Every codec
encodes it with the registry's `encode` and decodes it with its device `decode`; SNR = 10 log10(sum x^2 /
sum (decoded - x)^2) per clip, and the largest error as a fraction of mulaw8's bound.  Bytes: a 30-s clip's
audio member and its whole tar record.  Decode: one (8, 661,500) batch of random stored values cut into
7 windows of 110,250 (`fmashard.data.windows.make_windows`, the device stage) on this machine's CPU, median
of `--rounds` after a warm-up; on a GPU the same ops run there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # shard_tools, when run from a checkout without installing

from fmashard.data.windows import WindowSpec, make_windows  # noqa: E402
from fmashard.format.codecs import CODECS, SHARD_CODECS, mulaw8_error_bound  # noqa: E402
from fmashard.format.tar import record_bytes  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "fma_small" / "000" / "000002.mp3"
RATE, CLIP = 22050, 661_500


def to_clip(audio: np.ndarray, rate: int) -> np.ndarray:
    """(frames, channels) float -> the build's float32 mono 22,050 Hz clip of 30 s (cut or zero-padded)."""
    mono = audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio.astype(np.float32)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality="HQ")
    clip = np.zeros(CLIP, np.float32)
    clip[: min(CLIP, len(mono))] = mono[:CLIP]
    return np.clip(clip, -1.0, 1.0)


def demo_clips(count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    from shard_tools.demo_corpus import plan_demo_tracks, render_clip

    tracks = [t for t in plan_demo_tracks(8, 10, seed) if t.has_audio_file and t.seconds >= 30]
    return [(f"demo {t.track_id:06d} ({t.family})", to_clip(render_clip(t, seed), t.sample_rate))
            for t in tracks[:count]]


def round_trip(name: str, clip: np.ndarray) -> np.ndarray:
    codec = CODECS[name]
    raw = torch.frombuffer(bytearray(codec.encode(clip)), dtype=codec.torch_dtype)
    return codec.decode(raw, torch.empty(len(clip))).numpy()


def snr_db(clip: np.ndarray, decoded: np.ndarray) -> float:
    x = clip.astype(np.float64)
    return 10 * math.log10((x ** 2).sum() / ((decoded.astype(np.float64) - x) ** 2).sum())


def fidelity(label: str, clip: np.ndarray) -> dict:
    row = {"clip": label, "rms_dbfs": round(10 * math.log10(float(np.mean(clip.astype(np.float64) ** 2))), 1)}
    for name in SHARD_CODECS:
        decoded = round_trip(name, clip)
        row[f"snr_db_{name}"] = round(snr_db(clip, decoded), 2)
        if name == "mulaw8":
            row["mulaw8_max_error_of_bound"] = round(float(np.max(np.abs(decoded - clip) /
                                                                  (mulaw8_error_bound(clip) + 1e-7))), 4)
    return row


def decode_ms(name: str, rounds: int) -> float:
    codec, window = CODECS[name], WindowSpec()
    generator = torch.Generator().manual_seed(0)
    if codec.dtype == "uint8":
        audio = torch.randint(1, 256, (8, CLIP), dtype=torch.uint8, generator=generator)
    elif codec.dtype == "int16":
        audio = torch.randint(-32768, 32768, (8, CLIP), dtype=torch.int16, generator=generator)
    else:
        audio = (torch.rand(8, CLIP, generator=generator) * 2 - 1).to(getattr(torch, codec.dtype))
    labels, out = torch.zeros(8, dtype=torch.int64), torch.empty(8 * window.count * window.window)
    times = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        make_windows(audio, labels, window, out=out)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1e3


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        commit += "-dirty" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu_model": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads":
            torch.get_num_threads(), "git_commit": commit, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=16, help="demo tracks (of an 8-genre demo plan)")
    parser.add_argument("--rounds", type=int, default=7, help="timed decode rounds per codec")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "codec_fidelity.json")
    args = parser.parse_args()

    clips = []
    if FIXTURE.is_file():
        data, rate = sf.read(str(FIXTURE), dtype="float32", always_2d=True)
        clips.append(("real FMA 000002 (44.1 kHz stereo)", to_clip(data, rate)))
    else:
        print(f"note: {FIXTURE} not found; demo audio only", file=sys.stderr)
    clips += demo_clips(args.tracks)
    rows = [fidelity(label, clip) for label, clip in clips]
    demo = [r for r in rows if r["clip"].startswith("demo")]
    summary = {name: {"demo_median_snr_db": round(statistics.median(r[f"snr_db_{name}"] for r in demo), 2),
                      "demo_min_snr_db": round(min(r[f"snr_db_{name}"] for r in demo), 2)}
               for name in SHARD_CODECS}
    sizes = {name: {"sample_bytes": CLIP * CODECS[name].bytes_per_sample,
                    "record_bytes": record_bytes(CLIP * CODECS[name].bytes_per_sample),
                    "decode_ms_per_batch": round(decode_ms(name, args.rounds), 2)} for name in SHARD_CODECS}

    print(f"{'clip':42} {'rms dBFS':>8} " + " ".join(f"{'SNR ' + n:>12}" for n in SHARD_CODECS)
          + f" {'mulaw8 err/bound':>17}")
    for r in rows:
        print(f"{r['clip']:42} {r['rms_dbfs']:8.1f} " + " ".join(f"{r[f'snr_db_{n}']:9.1f} dB" for n in SHARD_CODECS)
              + f" {r['mulaw8_max_error_of_bound']:17.4f}")
    print(f"{'demo median (min)':51} " + " ".join(
        f"{summary[n]['demo_median_snr_db']:5.1f} ({summary[n]['demo_min_snr_db']:4.1f})" for n in SHARD_CODECS))
    print()
    print(f"{'codec':8} {'audio bytes/track':>18} {'record bytes/track':>19} {'x pcm16':>8} "
          f"{'decode ms / batch (CPU)':>24}")
    for name, s in sizes.items():
        print(f"{name:8} {s['sample_bytes']:18,} {s['record_bytes']:19,} "
              f"{s['record_bytes'] / sizes['pcm16']['record_bytes']:8.3f} {s['decode_ms_per_batch']:24.2f}")
    method = (f"30-s clips at 22,050 Hz (the build's float32 mono clip before encoding): the real FMA clip and "
              f"{len(demo)} demo tracks (render_clip, 8-genre plan, seed 0); SNR per clip; decode: one batch of "
              f"8 tracks -> 7 x 110,250 windows by make_windows, median of {args.rounds} rounds after a warm-up, "
              f"on the CPU ({torch.get_num_threads()} torch threads; no GPU here)")
    print(f"\nMethod: {method}.")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "method": method, "machine": machine(),
              "clips": rows, "demo_summary": summary, "bytes_and_decode": sizes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
