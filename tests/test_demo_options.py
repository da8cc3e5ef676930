"""`fmashard demo` checks every option before it makes a corpus, builds or trains."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "0"], "epochs: must be >= 1, got 0"),
    (["--model", "nope"], "model: unknown model 'nope'"),
    (["--tracks-per-genre", "100000000000000000000"], "tracks_per_genre must be at most 1000"),
    (["--genres", "0"], "genres must be between 1 and 8"),
])
def test_bad_options_are_refused_before_any_work(args, expected, tmp_path):
    out = tmp_path / "demo"
    try:  # the real command line; on a bad option it must stop at once, long before a corpus is made
        result = subprocess.run([sys.executable, "-m", "fmashard", "demo", str(out), *args], capture_output=True,
                                text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`fmashard demo {' '.join(args)}` started working instead of refusing the option")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not out.exists()


def test_demo_config_validates_on_construction():
    from fmashard.demo import DemoConfig
    from fmashard.errors import UserError

    with pytest.raises(UserError, match="epochs"):
        DemoConfig(out_dir="x", epochs=0)
    with pytest.raises(UserError, match="model"):
        DemoConfig(out_dir="x", model="nope")


@pytest.mark.parametrize("training_tracks, batch_size", [(5, 5), (8, 8), (300, 8), (1, 2)])
def test_demo_sizes_its_batch_by_the_training_split(training_tracks, batch_size):
    """`demo --genres 1` has fewer training tracks than a batch of 8: with one window per track
    (drop_last) a batch of 8 would take no step at all, so the demo uses smaller batches."""
    from fmashard.demo import DemoConfig

    config = DemoConfig(out_dir="x", genres=1).train_config("shards", "run", training_tracks)
    assert config.batch_size == batch_size
    assert config.windows == 1 and training_tracks < 2 or training_tracks // config.batch_size >= 1
