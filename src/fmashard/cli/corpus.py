"""`fmashard demo-data` and `fmashard fma-info`: write a demo corpus, look at an FMA folder."""
from __future__ import annotations

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


@app.command("fma-info")
def fma_info(
    fma_dir: Path = typer.Argument(..., help="FMA folder holding fma_metadata/tracks.csv."),
    subset: str = typer.Option("small", help="FMA subset: small, medium or large."),
    split: list[str] | None = typer.Option(None, help="Split to select (repeatable); default all."),
) -> None:
    """Show which tracks a build would select: counts per split, vocabulary, exclusions."""
    from shard_tools.fma_metadata import SPLITS, load_selection

    selection = load_selection(fma_dir, subset, tuple(split) if split else SPLITS)
    print(f"{fma_dir}: subset {selection.subset}, {selection.num_tracks} tracks, "
          f"{len(selection.vocabulary)} genres, {selection.excluded_no_genre} excluded without genre_top")
    for name, refs in selection.tracks.items():
        print(f"  {name:<11}{len(refs):>7}")
    print("vocabulary: " + ", ".join(selection.vocabulary))
