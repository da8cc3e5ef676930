"""`import fmashard`: the names of the public API, imported lazily, and the README's example run as written."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synth_shards import write_synthetic_shards

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using fmashard in your own training loop"
PUBLIC = ("ShardLoader", "LoaderConfig", "DeviceFeeder", "WindowSpec", "resolve_source", "resolve_device",
          "build_model")


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one python example"
    return blocks[0]


def test_import_fmashard_is_light_and_names_load_on_first_use():
    code = ("import sys, fmashard\n"
            "assert 'torch' not in sys.modules, 'import fmashard imported torch'\n"
            "import fmashard.cli\n"
            "assert 'torch' not in sys.modules, 'the CLI start imported torch'\n"
            f"names = {PUBLIC!r}\n"
            "assert sorted(fmashard.__all__) == sorted(names), fmashard.__all__\n"
            "assert all(callable(getattr(fmashard, n)) for n in names)\n"
            "assert 'torch' in sys.modules and set(names) <= set(dir(fmashard))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_public_names_are_the_modules_own():
    import fmashard
    from fmashard.data.device import DeviceFeeder, resolve_device
    from fmashard.data.loader import LoaderConfig, ShardLoader
    from fmashard.data.sources import resolve_source
    from fmashard.data.windows import WindowSpec
    from fmashard.models import build_model

    assert (fmashard.ShardLoader, fmashard.LoaderConfig, fmashard.DeviceFeeder, fmashard.WindowSpec,
            fmashard.resolve_source, fmashard.resolve_device, fmashard.build_model) == (
        ShardLoader, LoaderConfig, DeviceFeeder, WindowSpec, resolve_source, resolve_device, build_model)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        fmashard.Nope  # noqa: B018


def test_the_readme_example_trains_on_a_tiny_build(tmp_path, capsys):
    """The README's code, run as written but for its three setting lines (a tiny build, short windows, a
    model that takes them, one epoch)."""
    write_synthetic_shards(tmp_path, [5, 4, 3], clip_samples=4000)
    code = readme_example()
    settings = {
        'shards = "shards/"': f"shards = {str(tmp_path)!r}",
        "window = fmashard.WindowSpec()": "window = fmashard.WindowSpec(window=2000, overlap=0.5, count=3)",
        'model_name, epochs = "resnet1d", 10': 'model_name, epochs = "soundnet-large", 2',
    }
    for line, replacement in settings.items():
        assert code.count(line) == 1, f"the README example no longer sets {line!r}"
        code = code.replace(line, replacement)
    namespace: dict = {}
    exec(compile(code, "README.md example", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["epoch 1", "epoch 2"]
    assert math.isfinite(namespace["loss"].item())
    batch = namespace["batch"]
    assert batch.windows.shape[1:] == (1, 2000) and batch.labels.shape == (batch.windows.shape[0],)
    assert namespace["loader"].spec.num_samples == 12
