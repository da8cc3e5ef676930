"""`fmashard.cli.options`: typer options derived from a config's fields, each option written once."""
import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from fmashard.cli.options import config_command, option_parameters
from fmashard.train.config import EvaluateConfig, TrainConfig
from fmashard.train.options import ReadOptions, option

READ = [f.name for f in dataclasses.fields(ReadOptions)]


@pytest.mark.parametrize("config_class", [TrainConfig, EvaluateConfig])
def test_every_field_with_help_is_an_option_with_the_field_s_default(config_class):
    params = {p.name: p.default for p in option_parameters(config_class)}
    for f in dataclasses.fields(config_class):
        if "help" not in f.metadata:
            continue
        info = params.pop(f.name)
        assert info.help == f.metadata["help"] and info.help
        assert info.default is (... if f.default is dataclasses.MISSING else f.default) or info.default == f.default
    assert params == {}
    assert set(READ) <= {f.name for f in dataclasses.fields(config_class)}


def test_only_the_library_switches_are_not_train_options():
    shown = {p.name for p in option_parameters(TrainConfig)}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - shown == {"progress", "verbose"}


def test_train_and_evaluate_share_the_read_options_metadata():
    train = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}
    evaluate = {f.name: f.metadata for f in dataclasses.fields(EvaluateConfig)}
    assert all(train[name] == evaluate[name] and train[name]["panel"] for name in READ)


def test_a_new_option_is_one_field():
    """A config with one more field: the command gets `--gain-db` with its help and default, and the
    function receives the built config (a bad value is the config's error)."""
    @dataclasses.dataclass(frozen=True)
    class Config(ReadOptions):
        shards: str = dataclasses.field(metadata=option("Where.", "--shards"))
        gain_db: float = dataclasses.field(default=1.5, metadata=option("Gain in dB."))

    app, seen = typer.Typer(), []

    @config_command(app, "go", Config)
    def go(config: Config) -> None:
        seen.append(config)

    @app.command("other")
    def other() -> None:   # a second command keeps `go` a named subcommand
        pass

    runner = CliRunner()
    help_text = runner.invoke(app, ["go", "--help"], env={"COLUMNS": "200"}).output
    assert "--gain-db" in help_text and "Gain in dB." in help_text and "1.5" in help_text
    assert "--read-threads" in help_text
    result = runner.invoke(app, ["go", "--shards", "s", "--gain-db", "3", "--read-threads", "4"])
    assert result.exit_code == 0, result.output
    assert seen == [Config(shards="s", gain_db=3.0, read_threads=4)]
    result = runner.invoke(app, ["go", "--shards", "s", "--read-threads", "0"])
    assert result.exit_code != 0 and "read_threads: must be >= 1" in str(result.exception)


def test_every_loader_config_comes_from_the_read_options():
    options = ReadOptions(workers=2, read_threads=5, on_error="skip", check_crc=True)
    cfg = options.loader_config(4, shuffle=True, seed=7, drop_last=True)
    assert (cfg.batch_size, cfg.shuffle, cfg.seed, cfg.drop_last) == (4, True, 7, True)
    assert (cfg.num_workers, cfg.read_threads, cfg.on_error, cfg.check_crc) == (2, 5, "skip", True)
    assert options.loader_config(3).shuffle is False
    with pytest.raises(ValueError, match="on_error: must be raise or skip"):
        ReadOptions(on_error="warn")
