"""`fmashard ... --help`: every command has one, and flags show as flags (`--amp`), never `--amp <bool>`."""
import re

import pytest
from typer.testing import CliRunner

from fmashard.cli import _register, app

COMMANDS = ("demo-data", "fma-info", "build", "verify", "train", "evaluate", "bench", "demo")


@pytest.fixture(scope="module")
def help_of():
    _register()
    runner = CliRunner()

    def run(*command: str) -> str:
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        assert result.exit_code == 0, result.output
        return result.output
    return run


def test_every_command_is_registered(help_of):
    listed = help_of()
    for command in COMMANDS:
        assert re.search(rf"^\W*{re.escape(command)}\s", listed, flags=re.M), f"{command} missing:\n{listed}"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_no_option_shows_a_bool_value(help_of, command):
    text = help_of(*([command] if command else []))
    assert "--help" in text
    assert "<bool>" not in text and "BOOLEAN" not in text, text


@pytest.mark.parametrize(("command", "flags", "valued"), [
    ("train", ("--amp", "--random-crop", "--compile", "--check-crc", "--resume", "--log-batches"), "--epochs"),
    ("evaluate", ("--amp", "--no-amp", "--check-crc"), "--batch-size"),
    ("bench", ("--amp",), "--rounds"),
    ("build", ("--overwrite",), "--subset"),
])
def test_flags_are_listed_bare_while_valued_options_keep_their_type(help_of, command, flags, valued):
    lines = help_of(command).splitlines()

    def after(option: str) -> str:
        """The first word after `option` on its help line."""
        line = next((ln for ln in lines if re.search(rf"{re.escape(option)}(?![\w-])", ln)), None)
        assert line is not None, f"{command} --help does not list {option}"
        return (line.split(option, 1)[1].split() or [""])[0]
    for flag in flags:
        assert not after(flag).startswith("<"), f"{command} {flag}: {after(flag)}"
    assert after(valued) in ("<int>", "<str>"), f"{command} {valued}: {after(valued)}"


def test_the_augment_syntax_in_help_is_the_parser_s():
    from fmashard.data.transforms import AUGMENT_SYNTAX
    from fmashard.train.config import AUGMENT_SYNTAX as shown

    assert shown == AUGMENT_SYNTAX
