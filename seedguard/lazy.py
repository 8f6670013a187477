"""Names a module re-exports but loads only when first asked for (PEP 562).

A start-up that only applies needs little of what ``import seedguard``
offers; every name it does not need is loaded on first use instead, and
each start-up is spared its import (bench/targets.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(module: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` (its ``__name__``) that imports each
    name of ``sources`` from the module it maps to, on first use, and keeps it."""
    namespace = vars(sys.modules[module])

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
