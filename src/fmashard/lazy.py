"""A package's names imported on first use (PEP 562): `fmashard` and `fmashard.train` stay light to import."""
from __future__ import annotations

import importlib


def lazy_names(package: str, homes: dict[str, str], namespace: dict):
    """(`__getattr__`, `__dir__`) for a package whose names `homes` maps to the module defining each;
    a name is imported once, on first use, then kept in the package's `namespace`."""
    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(home), name)
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *homes})

    return __getattr__, __dir__
