"""Typer options derived from a config's dataclass fields, so that each option is written once (its default
in the field, its help text and flags in the field's metadata: `fmashard.train.options.option`).

    @config_command(app, "train", TrainConfig)
    def train(config: TrainConfig) -> None: ...    # `fmashard train --epochs 3` calls it with the config

A field without help metadata is not a CLI option (it keeps its default).  A bad value is the config's
`UserError`: one line and exit 2, as for every command.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing

import typer


def option_parameters(config_class) -> list[inspect.Parameter]:
    """One keyword parameter with a `typer.Option` default per field of `config_class` that has help."""
    types = typing.get_type_hints(config_class)
    params = []
    for f in dataclasses.fields(config_class):
        if "help" not in f.metadata:
            continue
        default = ... if f.default is dataclasses.MISSING else f.default
        info = typer.Option(default, *f.metadata["flags"], help=f.metadata["help"],
                            rich_help_panel=f.metadata["panel"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=types[f.name]))
    return params


def config_command(app: typer.Typer, name: str, config_class):
    """Register the decorated `fn(config)` as command `name`, its options those of `config_class`."""
    def register(fn):
        @functools.wraps(fn)
        def command(**values):
            return fn(config_class(**values))
        del command.__wrapped__   # typer reads the signature below, not fn's
        command.__signature__ = inspect.Signature(option_parameters(config_class))
        command.__annotations__ = {}
        return app.command(name)(command)
    return register
