"""The ledger table: make sure it exists and is current, read it, record units in it.

One owner per job: :mod:`~seedguard.ledger.tables` (the tables and the
revisions known), :mod:`~seedguard.ledger.rows` (the row and state types),
:mod:`~seedguard.ledger.reads` (every read, and the fast path's caches),
:mod:`~seedguard.ledger.recorder` (every write, each checked by the rows it
matched), :mod:`~seedguard.ledger.upgrade` (the schema, through alembic) and
:mod:`~seedguard.ledger.quirks` (what differs per database).
:class:`~seedguard.ledger.core.Ledger` is the entry the runner and the
commands use.
"""

from __future__ import annotations

from seedguard.ledger.core import Ledger
from seedguard.ledger.recorder import applied_by, utcnow
from seedguard.ledger.rows import (
    BLOCKING_STATUSES,
    Comparison,
    LedgerRow,
    LedgerState,
    LedgerStatus,
    PlannedRow,
    PlanRow,
    PlanState,
    RowState,
)
from seedguard.ledger.tables import HEAD_REVISION, KNOWN_REVISIONS, newer_ledger
from seedguard.ledger.upgrade import ALEMBIC_RUNS, migrations_path, setup_problem

__all__ = [
    "ALEMBIC_RUNS",
    "BLOCKING_STATUSES",
    "HEAD_REVISION",
    "KNOWN_REVISIONS",
    "Comparison",
    "Ledger",
    "LedgerRow",
    "LedgerState",
    "LedgerStatus",
    "PlanRow",
    "PlanState",
    "PlannedRow",
    "RowState",
    "applied_by",
    "migrations_path",
    "newer_ledger",
    "setup_problem",
    "utcnow",
]
