"""seedguard: exactly-once, retry-safe database seeding.

This module only re-exports the public API; README.md describes it.
"""

from __future__ import annotations

from seedguard.__about__ import __version__
from seedguard.aio import apply_async
from seedguard.api import apply
from seedguard.data import data_seed
from seedguard.datadir import data_dir
from seedguard.errors import (
    ConfigError,
    DataError,
    DefinitionError,
    DriftError,
    LockTimeout,
    SeedFailed,
    SeedguardError,
    UnitBlocked,
)
from seedguard.events import report_progress
from seedguard.registry import Registry, seed
from seedguard.result import ApplyResult
from seedguard.unit import SeedUnit
from seedguard.upsert import UpsertResult, upsert

__all__ = [
    "ApplyResult",
    "ConfigError",
    "DataError",
    "DefinitionError",
    "DriftError",
    "LockTimeout",
    "Registry",
    "SeedFailed",
    "SeedUnit",
    "SeedguardError",
    "UnitBlocked",
    "UpsertResult",
    "__version__",
    "apply",
    "apply_async",
    "data_dir",
    "data_seed",
    "report_progress",
    "seed",
    "upsert",
]
