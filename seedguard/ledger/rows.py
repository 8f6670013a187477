"""What the ledger holds: its rows, their statuses, and rows keyed by ``(name, version)``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

LedgerStatus = Literal["applied", "running", "dirty"]
"""A ledger row's status: ``running`` only while (or if interrupted while) a
non-transactional unit does its work, or while a transactional unit's
transaction is open (never visible to others unless that transaction was
ended mid-way); ``dirty`` when a transactional unit failed after its
transaction was ended mid-way, so part of its work may be committed."""

BLOCKING_STATUSES = frozenset({"running", "dirty"})
"""Rows whose unit's work may be partly done: it blocks until `seedguard resolve`."""


class PlannedRow(Protocol):
    """What planning reads of a ledger row: both row types below have it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def checksum(self) -> str | None: ...
    @property
    def status(self) -> str: ...


class LedgerRow(NamedTuple):
    """One recorded application of a unit version.

    A named tuple, not a frozen dataclass: immutable and compared by value
    alike, and a tenth of the class's import cost, which every first
    ``apply()`` pays (bench/targets.py, target 2b).
    """

    name: str
    version: int
    checksum: str | None
    status: LedgerStatus
    applied_at: dt.datetime
    duration_ms: int | None
    applied_by: str | None
    description: str | None = None  # since sg0002
    # Space-separated checksums this row held before its current one (since sg0003).
    superseded: str | None = None

    def supersedes(self, checksum: str) -> bool:
        """Whether ``checksum`` was applied under this row and then replaced."""
        return bool(self.superseded) and checksum in (self.superseded or "").split()


class PlanRow(NamedTuple):
    """What planning needs of a ledger row; the fast path reads only this."""

    name: str
    version: int
    checksum: str | None
    status: LedgerStatus


Row = TypeVar("Row", bound=PlannedRow, covariant=True)


class RowState(Mapping[tuple[str, int], Row]):
    """Ledger rows by ``(name, version)``, with look-ups by name.

    :class:`LedgerState` holds whole rows; :class:`PlanState`, what the fast
    path reads: building a LedgerRow per row was most of a no-op start-up's
    cost (bench/noop.py). The planner takes either.
    """

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self._rows = {(row.name, row.version): row for row in rows}
        self._latest: dict[str, Row] | None = None

    def __getitem__(self, key: tuple[str, int]) -> Row:
        return self._rows[key]

    def get(self, key: tuple[str, int], default: Any = None) -> Any:  # a plain dict look-up
        return self._rows.get(key, default)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def latest(self, name: str) -> Row | None:
        """The row of the highest recorded version of ``name``."""
        if self._latest is None:
            latest: dict[str, Row] = {}
            for row in self._rows.values():
                seen = latest.get(row.name)
                if seen is None or row.version > seen.version:
                    latest[row.name] = row
            self._latest = latest
        return self._latest.get(name)

    def rows(self) -> list[Row]:
        return list(self._rows.values())


class LedgerState(RowState[LedgerRow]):
    """Whole ledger rows (``status``, ``history``, and the re-read under the locks)."""


class PlanState(RowState[PlanRow]):
    """The planning columns of the ledger's rows (the fast path)."""


class Comparison(NamedTuple):
    """What :meth:`seedguard.ledger.Ledger.read_against` found."""

    all_applied: bool
    """Every unit has an applied row with its checksum: nothing to plan."""
    state: PlanState
    """Unless all applied: the rows as :meth:`Ledger.read` would return them for planning."""


def ledger_row(row: Any) -> LedgerRow:
    """The LedgerRow of a result row whose first columns are the ledger's, in order."""
    # By position: attribute access on result rows was half of a re-read
    # of 1,000 rows under the locks (bench/contention.py).
    name, version, checksum, status, applied_at, duration_ms, applied_by, description, \
        superseded = row[:9]
    return LedgerRow(name, version, checksum, status, as_utc(applied_at), duration_ms,
                     applied_by, description, superseded)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored time with UTC attached: stored naive, in UTC (see the recorder's ``utcnow``)."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
