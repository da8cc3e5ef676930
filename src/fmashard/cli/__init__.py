"""The `fmashard` command: a thin typer layer.  Each command builds a typed config, calls one library
function and prints.  Every `UserError` becomes a one-line message and exit code 2."""
from __future__ import annotations

import sys

import typer

from fmashard.errors import UserError

app = typer.Typer(
    help="fmashard: FMA audio -> WebDataset shards -> GPU training that never waits for data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module adds its own commands to `app`; imports stay light (heavy imports live inside commands).
    for name in ("corpus", "data", "train", "bench", "demo"):
        try:
            __import__(f"fmashard.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != f"fmashard.cli.{name}":
                raise


def main() -> None:
    _register()
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
