"""What the administrative calls (status, history, check, stamp, forget, resolve, new, init) return.

Plain dataclasses with an ``as_dict()`` each: the CLI renders them as text or
as the documented ``--json`` shape, and programs read the attributes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from seedguard.ledger import LedgerRow

UnitState = Literal["applied", "pending", "waiting", "drifted", "ahead", "blocked", "orphaned",
                   "inactive", "inapplicable"]
"""Every state :func:`seedguard.api.status` reports for a unit."""

STATES: tuple[UnitState, ...] = get_args(UnitState)


def _when(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


@dataclass(frozen=True)
class UnitStatus:
    """One unit's state. ``version`` is the code's (None for an orphaned row);
    ``recorded_version`` and the ``applied_*`` fields come from the newest ledger row."""

    name: str
    state: UnitState
    version: int | None
    recorded_version: int | None = None
    applied_at: dt.datetime | None = None
    applied_by: str | None = None
    description: str | None = None
    # State "waiting": the user's alembic revision the unit needs first.
    waits_for: str | None = None
    # State "pending" because this version's recorded checksum differs and the
    # unit re-applies on change: "data" (a data seed) or "code".
    changed: str | None = None
    # State "inactive" (applied, but no active context selects it): its contexts.
    contexts: tuple[str, ...] | None = None
    # State "inapplicable" (limited to other databases than this one): its dialects.
    dialects: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "version": self.version,
            "recorded_version": self.recorded_version,
            "applied_at": _when(self.applied_at),
            "applied_by": self.applied_by,
            "waits_for": self.waits_for,
            "changed": self.changed,
            "contexts": list(self.contexts) if self.contexts is not None else None,
            "dialects": list(self.dialects) if self.dialects is not None else None,
        }


@dataclass
class StatusResult:
    """Every selected unit's state, the orphaned ledger rows and who holds the locks."""

    url: str
    ledger: str
    ledger_exists: bool
    units: list[UnitStatus] = field(default_factory=list)
    # The ledger schema's revision; behind the installed seedguard's until the
    # next write (upgrade, stamp, ...) brings it up to date.
    ledger_revision: str | None = None
    ledger_current: bool = True
    file_lock: str = ""
    file_lock_holder: dict[str, object] | None = None
    database_lock_holder: str | None = None
    # The database lock's holder as its lease records it: host, pid, since,
    # heartbeat (UTC, ISO 8601); None when the lock is free.
    holder: dict[str, object] | None = None
    # Inside a Flask app with binds: each other bind's own status, by bind key
    # (its units are in ``units`` too).
    binds: dict[str, StatusResult] = field(default_factory=dict)

    def by_state(self, state: UnitState) -> list[UnitStatus]:
        return [u for u in self.units if u.state == state]

    @property
    def ok(self) -> bool:
        """Nothing pending, waiting, drifted or blocked (what ``seedguard check`` asks)."""
        return not any(u.state in ("pending", "waiting", "drifted", "blocked")
                       for u in self.units)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ledger": self.ledger,
            "ledger_exists": self.ledger_exists,
            "ledger_revision": self.ledger_revision,
            "ledger_current": self.ledger_current,
            "units": [u.as_dict() for u in self.units],
            "counts": {state: len(self.by_state(state)) for state in STATES},
            "locks": {
                "file": {"path": self.file_lock, "holder": self.file_lock_holder},
                "database": {"holder": self.database_lock_holder},
            },
            "holder": self.holder,
            **({"binds": {key: {name: value for name, value in result.as_dict().items()
                                if name not in ("units", "counts")}
                          for key, result in self.binds.items()}} if self.binds else {}),
        }


@dataclass
class HistoryResult:
    """The ledger's rows, newest first.

    Inside a Flask app with binds, ``rows`` holds every database's rows and
    ``binds`` each other bind's own result (its database, ledger and rows).
    """

    url: str
    ledger: str
    rows: list[LedgerRow] = field(default_factory=list)
    binds: dict[str, HistoryResult] = field(default_factory=dict)

    @property
    def own_rows(self) -> list[LedgerRow]:
        """The rows of this result's own database (``rows`` less the other binds')."""
        others = {id(row) for result in self.binds.values() for row in result.rows}
        return [row for row in self.rows if id(row) not in others]

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ledger": self.ledger,
            **({"binds": {key: result.as_dict() for key, result in self.binds.items()}}
               if self.binds else {}),
            "rows": [
                {
                    "name": r.name,
                    "version": r.version,
                    "status": r.status,
                    "checksum": r.checksum,
                    "applied_at": _when(r.applied_at),
                    "duration_ms": r.duration_ms,
                    "applied_by": r.applied_by,
                    "description": r.description,
                }
                for r in self.rows
            ],
        }


@dataclass
class LedgerChange:
    """What ``stamp``, ``forget`` or ``resolve`` did to the ledger.

    ``action`` is ``"stamped"``, ``"restamped"`` (a drifted checksum accepted),
    ``"forgotten"``, ``"resolved-applied"``, ``"resolved-retry"`` or
    ``"unchanged"``; ``versions`` are the versions whose rows were touched;
    ``bind`` the Flask-SQLAlchemy bind whose ledger it is (``None``: the default
    database).
    """

    name: str
    action: str
    versions: list[int] = field(default_factory=list)
    bind: str | None = None

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "versions": list(self.versions),
                **({"bind": self.bind} if self.bind is not None else {})}


@dataclass
class WrittenFile:
    """A file written by ``new`` or ``init``; ``created`` is False when it was appended to."""

    path: Path
    created: bool
    # init: the URL had a password, which was left out of the file.
    password_removed: bool = False
