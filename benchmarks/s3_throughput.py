"""Shard streaming vs one GET per track, on a real S3 server (SeaweedFS on 127.0.0.1).

Five loaders over the same tracks (30 s at 22,050 Hz), batch size 8, workers 0, through the same boto3
client (`fmashard.storage.s3_client()`), and three networks: plain loopback, loopback through
`latency_proxy.py` (+30 ms before the first byte of every response, as from a server 30 ms away), and the
same proxy capped at `--link-mbit` for all responses together (a link that the bytes, not the round trips,
bound; 0 leaves this network out):

  shards         fmashard's ShardLoader over s3://.../shards/manifest.json (pcm16; one streaming GET per
                 shard run)
  shards-mulaw8  the same over mulaw8 shards of the same tracks (issue 16: one byte a sample)
  naive          NaiveFileDataset + DataLoader over s3://.../files (one GET per 2.6 MB float32 .pt track)
  raw            the limit: get_object of the pcm16 shard objects, read in 8 MB chunks, nothing parsed
  raw-mulaw8     the same for the mulaw8 shard objects

One warm-up round, then `--rounds` timed rounds, interleaved (shards naive raw shards naive raw ...)
so drift in the machine's load hits every loader alike.  Reports medians with min-max.

    .venv/bin/python benchmarks/s3_throughput.py --tracks 240 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks"), str(REPO / "src"), str(REPO)]

from fmashard.bench.report import commit as git_commit  # noqa: E402
from s3_server import S3Server, weed_binary, write_files_layout  # noqa: E402
from synth_shards import VOCAB, write_synthetic_shards  # noqa: E402

CLIP_SAMPLES = 661_500   # 30 s at 22,050 Hz
LOADERS = ("shards", "shards-mulaw8", "naive", "raw", "raw-mulaw8")


def make_data(root: Path, tracks: int, per_shard: int) -> None:
    counts = [per_shard] * (tracks // per_shard) + ([tracks % per_shard] if tracks % per_shard else [])
    truth = write_synthetic_shards(root / "shards", counts, clip_samples=CLIP_SAMPLES)
    write_files_layout(root / "files", truth, VOCAB, CLIP_SAMPLES)
    write_codec_shards(root / "shards-mulaw8", root / "shards", truth, "mulaw8")


def write_codec_shards(root: Path, pcm16: Path, truth: dict, codec_name: str) -> None:
    """The pcm16 shards' tracks, in the same shards and order, re-encoded with another codec of the registry
    (the build's `encode` of the float clip) and written with the build's shard writer."""
    from fmashard.format.codecs import get_codec
    from fmashard.format.tar import record_bytes
    from shard_tools.tar_writer import ShardWriter

    codec, manifest = get_codec(codec_name), json.loads((pcm16 / "manifest.json").read_text())
    sample_bytes = manifest["clip_samples"] * codec.bytes_per_sample
    ids = iter(sorted(truth))   # write_synthetic_shards numbers the tracks in writing order
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            (root / shard["path"]).parent.mkdir(parents=True, exist_ok=True)
            writer = ShardWriter(root / shard["path"], root / shard["index"], codec.ext, sample_bytes)
            for _ in range(shard["num_samples"]):
                track_id = next(ids)
                audio, label = truth[track_id]
                writer.add(f"{track_id:06d}", label, {"track_id": track_id, "label": label},
                           codec.encode(audio.astype("float32") / 32768.0))
            result = writer.commit()
            shard.update(num_bytes=result.num_bytes, sha256=result.sha256)
    manifest.update(codec=codec.name, dtype=codec.dtype, sample_bytes=sample_bytes,
                    record_bytes=record_bytes(sample_bytes))
    (root / "manifest.json").write_text(json.dumps(manifest))


def shard_pass(spec, batch_size: int) -> int:
    from fmashard.data.loader import LoaderConfig, ShardLoader

    loader = ShardLoader(spec, LoaderConfig(batch_size=batch_size, num_workers=0, seed=0))
    return sum(len(batch) for batch in loader)


def naive_pass(dataset, batch_size: int) -> int:
    from fmashard.bench.naive import naive_loader

    return sum(len(labels) for _, labels in naive_loader(dataset, batch_size=batch_size, num_workers=0))


def raw_pass(spec, _batch_size: int) -> int:
    """GET each shard object with the loaders' client, read it in 8 MB chunks; tracks = records read."""
    from fmashard import storage

    client, total = storage.s3_client(), 0
    for shard in spec.shards:
        bucket, key = storage.split_s3(shard.url)
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        while chunk := body.read(8 << 20):
            total += len(chunk)
    return round(total / spec.record_bytes)


class ProxyProcess:
    """benchmarks/latency_proxy.py in a process of its own (its threads must not take our GIL)."""

    def __init__(self, upstream_port: int, delay_ms: float, link_mbit: float = 0.0):
        self.args = [sys.executable, str(REPO / "benchmarks/latency_proxy.py"),
                     "--upstream", f"127.0.0.1:{upstream_port}", "--delay-ms", str(delay_ms),
                     "--link-mbit", str(link_mbit)]
        self.responses = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"latency proxy did not start ({self.url!r})")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.responses = int(out.rsplit(":", 1)[1]) if "responses delayed:" in out else None


def timed(fn, *args) -> tuple[float, int]:
    began = time.perf_counter()
    tracks = fn(*args)
    return time.perf_counter() - began, tracks


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "rounds": [round(v, 1) for v in values]}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import boto3
    import torch

    weed = subprocess.run([weed_binary(), "version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__, "boto3": boto3.__version__,
            "seaweedfs": weed, "os": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Shard streaming vs per-object GETs on SeaweedFS.")
    parser.add_argument("--tracks", type=int, default=240)
    parser.add_argument("--per-shard", type=int, default=96, help="tracks per shard object (127 MB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--link-mbit", type=float, default=1000.0,
                        help="a third network: the proxy capped at this many Mbit/s (0: left out)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1, as in a DataLoader worker: on a loaded 2-core "
                             "machine 2 threads made every torch.stack 10x slower)")
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/s3_throughput.json"))
    args = parser.parse_args()
    command = "python benchmarks/s3_throughput.py " + " ".join(sys.argv[1:])

    import torch

    from fmashard import storage
    from fmashard.bench.naive import NaiveFileDataset
    from fmashard.data.sources import resolve_source

    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="fmashard-s3-bench-") as tmp:
        tmp = Path(tmp)
        make_data(tmp / "data", args.tracks, args.per_shard)
        with S3Server(tmp / "seaweedfs") as server, \
                ProxyProcess(server.ports["s3"], args.delay_ms) as proxy, \
                ProxyProcess(server.ports["s3"], args.delay_ms, args.link_mbit) as link:
            print(f"weed mini answered in {server.startup_seconds:.1f} s", file=sys.stderr)
            shards_url = server.upload_tree(tmp / "data" / "shards", "bench/shards")
            files_url = server.upload_tree(tmp / "data" / "files", "bench/files")
            mulaw8_url = server.upload_tree(tmp / "data" / "shards-mulaw8", "bench/shards-mulaw8")
            os.environ.update({k: v for k, v in server.env().items() if k.startswith("AWS_")})
            spec = resolve_source(f"{shards_url}/manifest.json")
            mulaw8 = resolve_source(f"{mulaw8_url}/manifest.json")
            dataset = NaiveFileDataset(files_url)
            assert spec.num_samples == mulaw8.num_samples == len(dataset) == args.tracks
            networks = {"loopback": server.endpoint, f"proxy+{args.delay_ms:g}ms": proxy.url}
            if args.link_mbit > 0:
                networks[f"proxy+{args.delay_ms:g}ms,{args.link_mbit:g}Mbit/s"] = link.url
            runners = {"shards": (shard_pass, spec), "shards-mulaw8": (shard_pass, mulaw8),
                       "naive": (naive_pass, dataset), "raw": (raw_pass, spec), "raw-mulaw8": (raw_pass, mulaw8)}
            rates: dict = {net: {name: [] for name in LOADERS} for net in networks}
            setup_s = time.perf_counter() - started
            for round_ in range(args.rounds + 1):   # round 0: warm-up, not recorded
                for net, endpoint in networks.items():
                    storage.set_endpoint_url(endpoint)
                    storage.s3_client()   # built now (~0.1 s), not inside whichever pass comes first
                    for name in LOADERS:
                        fn, source = runners[name]
                        seconds, tracks = timed(fn, source, args.batch_size)
                        assert tracks == args.tracks, (name, tracks)
                        if round_:
                            rates[net][name].append(tracks / seconds)
                        print(f"round {round_} {net:>24} {name:>13}: {tracks / seconds:7.1f} tracks/s "
                              f"({seconds:.1f} s){'' if round_ else ' warm-up'}", file=sys.stderr)

    delayed = proxy.responses + (link.responses or 0)
    results = {}
    for net, per_loader in rates.items():
        row = {name: summary(values) for name, values in per_loader.items()}
        med = {name: statistics.median(values) for name, values in per_loader.items()}
        row["shards_vs_naive"] = round(med["shards"] / med["naive"], 2)
        row["shards_vs_raw"] = round(med["shards"] / med["raw"], 2)
        # the same ratios within each round (the loaders ran back to back), then their median
        row["shards_vs_naive_paired"] = round(statistics.median(
            s / n for s, n in zip(per_loader["shards"], per_loader["naive"])), 2)
        row["shards_vs_raw_paired"] = round(statistics.median(
            s / r for s, r in zip(per_loader["shards"], per_loader["raw"])), 2)
        row["mulaw8_vs_pcm16"] = round(med["shards-mulaw8"] / med["shards"], 2)   # issue 16: same tracks
        row["mulaw8_vs_pcm16_paired"] = round(statistics.median(
            m / s for s, m in zip(per_loader["shards"], per_loader["shards-mulaw8"])), 2)
        row["mulaw8_vs_raw_mulaw8"] = round(med["shards-mulaw8"] / med["raw-mulaw8"], 2)
        results[net] = row
    report = {
        "command": command, "commit": git_commit(), "machine": info,
        "method": (f"{args.tracks} tracks of 30 s at 22,050 Hz (int16 shards of {args.per_shard} tracks = "
                   f"{spec.record_bytes * args.per_shard / 1e6:.0f} MB objects; mulaw8 shards of the same tracks "
                   f"= {mulaw8.record_bytes * args.per_shard / 1e6:.0f} MB objects; float32 .pt files of "
                   f"{CLIP_SAMPLES * 4 / 1e6:.1f} MB), batch size {args.batch_size}, workers 0, SeaweedFS "
                   f"`weed mini` on 127.0.0.1, boto3, torch threads {args.threads}; 1 warm-up + {args.rounds} "
                   f"timed rounds, interleaved ({', '.join(LOADERS)}) per network; tracks/s median (min-max); "
                   f"ratios of medians and, paired, the median of the per-round ratios. The proxy delays the first "
                   f"byte of every response by {args.delay_ms:g} ms ({delayed} responses delayed); the capped "
                   f"proxy also holds all responses together to {args.link_mbit:g} Mbit/s."),
        "targets": {"shards_vs_naive_loopback": 4, "shards_vs_naive_proxy": 10, "shards_vs_raw": 0.5},
        "tracks_per_second": results,
        "seconds": {"setup": round(setup_s, 1), "total": round(time.perf_counter() - started, 1)},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{'network':>26} " + " ".join(f"{n:>16}" for n in LOADERS)
          + f" {'vs naive (paired)':>18} {'vs raw (paired)':>16} {'mulaw8/pcm16 (paired)':>22}")
    for net, row in results.items():
        cells = [f"{row[n]['median']:.0f} ({row[n]['min']:.0f}-{row[n]['max']:.0f})" for n in LOADERS]
        print(f"{net:>26} " + " ".join(f"{c:>16}" for c in cells)
              + f" {row['shards_vs_naive']:>9.1f}x ({row['shards_vs_naive_paired']:.1f}x) "
              f"{row['shards_vs_raw']:>8.0%} ({row['shards_vs_raw_paired']:.0%}) "
              f"{row['mulaw8_vs_pcm16']:>13.2f}x ({row['mulaw8_vs_pcm16_paired']:.2f}x)")
    print(f"\n{report['method']}\nwrote {args.json}")


if __name__ == "__main__":
    main()
