"""`fmashard demo`: corpus -> build -> train -> bench, on the CPU, in minutes; `fmashard demo-data`: the corpus
alone (a synthetic FMA-format folder)."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import typer

from fmashard.cli import app


@app.command("demo-data")
def demo_data(
    out_dir: Path = typer.Argument(..., help="New or empty folder for the corpus."),
    genres: int = typer.Option(8, help="Number of FMA genres, 1..8."),
    tracks_per_genre: int = typer.Option(20, help="Tracks per genre (10..1000), split 80/10/10."),
    seed: int = typer.Option(0, help="Same seed, byte-identical corpus."),
) -> None:
    """Write a small synthetic corpus in FMA's layout (tracks.csv, genres.csv, fma_small/*.mp3)."""
    from shard_tools.demo_corpus import DemoCorpusConfig, write_demo_corpus

    config = DemoCorpusConfig(out_dir=out_dir, genres=genres, tracks_per_genre=tracks_per_genre,
                              seed=seed)
    print(write_demo_corpus(config).format())


@app.command("demo")
def demo_command(
    out_dir: str | None = typer.Argument(None, help="Folder for the demo (default: a temporary folder)."),
    genres: int = typer.Option(8, "--genres", help="Genres in the generated corpus (1-8)."),
    tracks_per_genre: int = typer.Option(12, "--tracks-per-genre", help="Tracks per genre (>= 10)."),
    epochs: int = typer.Option(2, "--epochs", help="Training epochs."),
    model: str = typer.Option("soundnet", "--model", help="resnet1d, soundnet or soundnet-large."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Make an FMA-format corpus, build shards, train a small model with --amp, bench against naive."""
    from fmashard.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=out_dir or "", genres=genres, tracks_per_genre=tracks_per_genre, epochs=epochs,
                        model=model, seed=seed)  # every option checked before any work
    if not out_dir:
        config = dataclasses.replace(config, out_dir=tempfile.mkdtemp(prefix="fmashard-demo-"))
    run_demo(config, echo=typer.echo)
