"""Bytes an audio header costs from object storage (`storage.open_ranged`, used by `--long-tracks all` plans).

    .venv/bin/python benchmarks/header_probe.py [--seconds 120] [--out results/header_probe.json]

Method: a SeaweedFS server on 127.0.0.1 (`tests/s3_server.py`, needs the dev extra's `weed`); 44.1 kHz files
of `--seconds` written by soundfile (WAV stereo PCM16, OGG mono, MP3 stereo, FLAC mono) and the real FMA clip
(`../shared/fixtures`, when present) uploaded; for each, `soundfile.info` over `storage.open_ranged(url)`
(256 KB ranged reads): the bytes fetched and the requests made, beside the file's size.  Counts, not times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import soundfile as sf  # noqa: E402

from fmashard import storage  # noqa: E402
from fmashard.bench.report import commit  # noqa: E402

FILES = (("stereo.wav", 2), ("mono.ogg", 1), ("stereo.mp3", 2), ("mono.flac", 1))
FMA_CLIP = ROOT.parent / "shared" / "fixtures" / "fma_small" / "000" / "000002.mp3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "header_probe.json"))
    args = parser.parse_args()
    from s3_server import release_shared_server, shared_server
    from test_corpus import write_audio

    work = Path(tempfile.mkdtemp(prefix="header-probe-"))
    paths = [write_audio(work / name, args.seconds, seed=1, rate=44100, channels=ch) for name, ch in FILES]
    paths += [FMA_CLIP] if FMA_CLIP.is_file() else []
    server = shared_server(work)
    os.environ.update(server.env())
    rows = []
    try:
        for path in paths:
            server.client().put_object(Bucket=server.bucket, Key=f"probe/{path.name}", Body=path.read_bytes())
            with storage.open_ranged(server.url(f"probe/{path.name}")) as f:
                info = sf.info(f)
                rows.append({"file": path.name, "bytes": path.stat().st_size, "fetched": f.raw.bytes_read,
                             "requests": f.raw.reads, "frames": info.frames, "rate": info.samplerate})
            print(json.dumps(rows[-1]))
    finally:
        release_shared_server()
    report = {"command": "python benchmarks/header_probe.py " + " ".join(sys.argv[1:]), "commit": commit(),
              "buffer_bytes": storage.ranged.BUFFER, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
