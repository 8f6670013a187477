"""seedguard: exactly-once, retry-safe database seeding.

This module only re-exports the public API; see ``DESIGN.md`` for the contract.
"""

from __future__ import annotations

from seedguard.__about__ import __version__
from seedguard.api import apply
from seedguard.errors import (
    ConfigError,
    DefinitionError,
    DriftError,
    LockTimeout,
    SeedFailed,
    SeedguardError,
    UnitBlocked,
)
from seedguard.events import report_progress
from seedguard.registry import Registry
from seedguard.result import ApplyResult
from seedguard.unit import SeedUnit, seed

__all__ = [
    "ApplyResult",
    "ConfigError",
    "DefinitionError",
    "DriftError",
    "LockTimeout",
    "Registry",
    "SeedFailed",
    "SeedUnit",
    "SeedguardError",
    "UnitBlocked",
    "__version__",
    "apply",
    "report_progress",
    "seed",
]
