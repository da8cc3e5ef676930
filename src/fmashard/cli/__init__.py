"""The `fmashard` command: a thin typer layer.  Each command builds a typed config, calls one library
function and prints.  Every `UserError` becomes a one-line message and exit code 2."""
from __future__ import annotations

import sys

import typer

from fmashard.errors import UserError

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover - older typer, on click itself
    from click import exceptions as _click


def _show_flags_as_flags() -> None:
    """typer's rich help prints a value type after every option, `--amp <bool>` and `--help <bool>` too,
    though a flag takes no value: show flags bare, as its plain help does."""
    option = getattr(typer.core, "TyperOption", None)
    display_type = getattr(option, "display_type_rich", None)
    if display_type is None:  # a typer that does not print types
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else display_type(self, ctx)
    option.display_type_rich = display_type_rich


_show_flags_as_flags()
app = typer.Typer(
    help="fmashard: FMA audio -> WebDataset shards -> GPU training that never waits for data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module adds its own commands to `app`; imports stay light (heavy imports live inside commands).
    for name in ("data", "train", "bench", "demo"):
        try:
            __import__(f"fmashard.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != f"fmashard.cli.{name}":
                raise


def main() -> None:
    _register()
    try:
        code = app(standalone_mode=False)   # parse errors come here, to end in one `error:` line
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except _click.NoArgsIsHelpError:
        sys.exit(0)  # the help is printed already (typer prints it while making the error)
    except _click.UsageError as exc:
        if exc.ctx is not None:
            print(exc.ctx.get_usage(), file=sys.stderr)
            print(f"Try '{exc.ctx.command_path} --help' for help.", file=sys.stderr)
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except _click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:   # typer.Exit(n) from a command, 130 after Ctrl-C
        sys.exit(code)
