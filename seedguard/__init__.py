"""seedguard: exactly-once, retry-safe database seeding.

This module only re-exports the public API; README.md describes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seedguard.__about__ import __version__
from seedguard.api import apply, plan
from seedguard.errors import (
    ConfigError,
    DataError,
    DefinitionError,
    DowngradeRefused,
    DriftError,
    LockTimeout,
    PlanStale,
    SeedFailed,
    SeedguardError,
    UnitBlocked,
    UnitEscape,
    WaitTimeout,
)
from seedguard.events import report_progress
from seedguard.lazy import lazy_names
from seedguard.registry import Registry, seed
from seedguard.result import ApplyResult
from seedguard.schema import Schema
from seedguard.unit import SeedUnit

# Eager: importing the seedguard.upsert package would otherwise bind the
# package's name `upsert` to the submodule instead of the function.
from seedguard.upsert import UpsertResult, upsert

if TYPE_CHECKING:
    from seedguard.aio import apply_async, apply_each_async
    from seedguard.data import data_seed
    from seedguard.datadir import data_dir
    from seedguard.fleet import FleetResult, apply_each
    from seedguard.readiness import wait
    from seedguard.review import Plan
    from seedguard.sqldir import sql_dir

# Loaded when first used: a start-up that only applies code units never loads
# the data-seed machinery (csv, decimal, uuid, refs) or apply_async
# (tests/test_imports.py; every start-up pays its imports: bench/targets.py).
_LAZY = {
    "apply_async": "seedguard.aio",
    "apply_each_async": "seedguard.aio",
    "data_seed": "seedguard.data",
    "data_dir": "seedguard.datadir",
    "FleetResult": "seedguard.fleet",
    "apply_each": "seedguard.fleet",
    "Plan": "seedguard.review",
    "sql_dir": "seedguard.sqldir",
    "wait": "seedguard.readiness",
}


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

__all__ = [
    "ApplyResult",
    "ConfigError",
    "DataError",
    "DefinitionError",
    "DowngradeRefused",
    "DriftError",
    "FleetResult",
    "LockTimeout",
    "Plan",
    "PlanStale",
    "Registry",
    "Schema",
    "SeedFailed",
    "SeedUnit",
    "SeedguardError",
    "UnitBlocked",
    "UnitEscape",
    "UpsertResult",
    "WaitTimeout",
    "__version__",
    "apply",
    "apply_async",
    "apply_each",
    "apply_each_async",
    "data_dir",
    "data_seed",
    "plan",
    "report_progress",
    "seed",
    "sql_dir",
    "upsert",
    "wait",
]
