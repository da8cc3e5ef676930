"""fmashard: FMA audio -> WebDataset shards -> GPU training that never waits for data.

The names a training loop of your own needs (README: "Using fmashard in your own training loop"):

    spec = fmashard.resolve_source("shards/", "training")
    loader = fmashard.ShardLoader(spec, fmashard.LoaderConfig(batch_size=8))
    for batch in fmashard.DeviceFeeder(loader, fmashard.resolve_device("auto"), fmashard.WindowSpec()): ...

They are imported on first use (PEP 562), so `import fmashard` (and the `fmashard` command's start)
stays light: torch is imported only when one of them is used.
"""
from __future__ import annotations

import importlib

from fmashard.cpu_isa import cap_onednn_isa

__version__ = "0.1.0"
cap_onednn_isa()   # before torch runs anything: correct bf16 on AMX CPUs (fmashard.cpu_isa)

_EXPORTS = {  # name -> the module that defines it
    "ShardLoader": "fmashard.data.loader",
    "LoaderConfig": "fmashard.data.loader",
    "DeviceFeeder": "fmashard.data.device",
    "WindowSpec": "fmashard.data.windows",
    "resolve_source": "fmashard.data.sources",
    "resolve_device": "fmashard.data.device",
    "build_model": "fmashard.models",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fmashard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value   # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
