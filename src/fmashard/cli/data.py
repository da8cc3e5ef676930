"""`fmashard build` and `fmashard verify`: thin wrappers over shard_tools.build / shard_tools.verify."""

import typer

from fmashard.cli import app
from fmashard.format.codecs import CODECS, SHARD_CODECS

CODEC_CHOICES = " or ".join(f"{name} ({CODECS[name].dtype})" for name in SHARD_CODECS)


@app.command("build")
def build(
    out: str = typer.Option(..., "--out", help="Output folder or s3://bucket/prefix."),
    fma_dir: str = typer.Option("", "--fma-dir", help="FMA folder holding fma_metadata/ and fma_<subset>/."),
    subset: str = typer.Option("small", help="FMA subset: small, medium, large or full (fma_full/'s whole tracks)."),
    corpus: str = typer.Option("", "--corpus", help="Instead of --fma-dir: a table (.csv/.tsv/.jsonl with columns "
                               "path, label and optional split, track_id, group) or a folder per class "
                               "(DIR/blues/*.au: GTZAN's layout)."),
    split_ratios: str = typer.Option("80,10,10", help="--corpus without a split column: training,validation,test "
                                     "shares of the groups (else the tracks), placed by a hash of their names; "
                                     "every share gets a group when there are enough (README: how splits are "
                                     "made)."),
    long_tracks: str = typer.Option("first", help="first: one clip per track (cut or padded); all: cut each track "
                                    "into consecutive clips, keys {track_id:06d}_{clip:04d}."),
    clip_hop_seconds: float | None = typer.Option(None, help="--long-tracks all: seconds between clip starts "
                                                  "(default: --clip-seconds, no overlap)."),
    workers: int | None = typer.Option(None, help="Decode processes (default: all CPU cores; --engine ray without "
                                       "--ray-address: the CPUs of the local Ray started for the run)."),
    engine: str = typer.Option("local", help="Who runs the one-task-per-shard build: local (a process pool) or ray "
                               "(a Ray cluster; pip install 'fmashard\\[ray]'). The output bytes are the same."),
    ray_address: str = typer.Option("", "--ray-address", help="--engine ray: the cluster to join (auto, "
                                    "ray://HOST:10001); default: start a local Ray for this run."),
    shard_size: str = typer.Option("256MB", help="Maximum shard size: 256MB, 64MiB, 4096... (MB = 2**20 bytes)."),
    codec: str = typer.Option("pcm16", help=f"Audio stored as {CODEC_CHOICES}."),
    clip_seconds: float = typer.Option(30.0, help="Clip length: longer tracks are cut, shorter zero-padded."),
    sample_rate: int = typer.Option(22050, help="Target sample rate (soxr HQ resampling)."),
    min_seconds: float = typer.Option(27.5, help="Tracks shorter than this are skipped (listed in the manifest); "
                                      "with --long-tracks all, a final partial clip shorter than this is dropped."),
    seed: int = typer.Option(0, help="Shuffle seed for the assignment of tracks to shards."),
    layout: str = typer.Option("shards", help="shards (tar + .idx) or files (the notebook's one .pt per track)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a build made with other arguments."),
) -> None:
    """Decode audio (FMA, a table or a folder per class) into fixed-stride WebDataset shards (resumable; rerun to
    continue)."""
    from shard_tools.build import BuildConfig, build_shards

    config = BuildConfig(fma_dir=fma_dir, out=out, subset=subset, corpus=corpus, split_ratios=split_ratios,
                         long_tracks=long_tracks, clip_hop_seconds=clip_hop_seconds, workers=workers,
                         shard_size=shard_size,
                         codec=codec, clip_seconds=clip_seconds, sample_rate=sample_rate, min_seconds=min_seconds,
                         seed=seed, layout=layout, overwrite=overwrite, engine=engine, ray_address=ray_address)
    try:
        report = build_shards(config, progress=True)
    except KeyboardInterrupt:  # finished shards are journaled: the same command resumes from them
        typer.echo("interrupted: re-run the same command to continue", err=True)
        raise typer.Exit(130) from None
    print(report.summary())


@app.command("verify")
def verify(out: str = typer.Argument(..., help="Build folder, s3:// prefix or manifest.json URL.")) -> None:
    """Re-read every shard of a build: sha256, sizes, sample members, .idx. Exit 1 on any problem."""
    from shard_tools.verify import verify_build

    report = verify_build(out)
    for problem in report.problems:
        print(problem)
    print(report.summary())
    raise typer.Exit(0 if report.ok else 1)
