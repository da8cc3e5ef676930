"""`fmashard demo`: corpus -> build -> train -> bench, on the CPU, in minutes."""
from __future__ import annotations

import dataclasses
import tempfile

import typer

from fmashard.cli import app


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
