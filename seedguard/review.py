"""A reviewed plan: what a rehearsal saw, and the digest that pins it.

:class:`Plan` is what a reviewer reads (``seedguard plan``, made by
:mod:`seedguard.rehearsal`), and its :attr:`Plan.digest` is what
``apply(plan=...)`` / ``seedguard upgrade --plan`` re-computes under the locks
before anything runs (:func:`check_reviewed`): the pending units with their
versions and checksums, the active contexts, and the ledger rows of the
selected units. Any difference raises :class:`~seedguard.PlanStale` and
nothing runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError, PlanStale

if TYPE_CHECKING:
    from seedguard.ledger import PlannedRow, RowState
    from seedguard.unit import SeedUnit

PLAN_FORMAT = 1


@dataclass
class RowCounts:
    """Rows one unit inserted, updated and deleted in one table."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass
class RehearsedUnit:
    """One pending unit as the rehearsal saw it.

    ``not_rehearsed`` says why a unit was not run (``transactional=False``,
    blocked, after a unit that failed or was not run); ``error`` why a unit
    that ran failed.
    """

    name: str
    version: int
    checksum: str
    statements: list[str] = field(default_factory=list)
    rows: dict[str, RowCounts] = field(default_factory=dict)
    duration_ms: int = 0
    error: str | None = None
    not_rehearsed: str | None = None

    @property
    def rehearsed(self) -> bool:
        return self.not_rehearsed is None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "checksum": self.checksum,
                "rehearsed": self.rehearsed, "not_rehearsed": self.not_rehearsed,
                "failed": self.failed, "error": self.error, "duration_ms": self.duration_ms,
                "rows": {table: vars(counts) for table, counts in self.rows.items()},
                "statements": list(self.statements)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RehearsedUnit:
        return cls(name=str(doc["name"]), version=int(doc["version"]),
                   checksum=str(doc["checksum"]),
                   statements=[str(s) for s in doc.get("statements", [])],
                   rows={str(t): RowCounts(**c) for t, c in doc.get("rows", {}).items()},
                   duration_ms=int(doc.get("duration_ms", 0)), error=doc.get("error"),
                   not_rehearsed=doc.get("not_rehearsed"))


@dataclass
class Plan:
    """A rehearsal's record: what would be applied, and the digest that pins it.

    ``units`` are the pending units in run order; ``digest`` covers them (name,
    version, checksum), the active ``contexts`` and the ledger rows of the
    selected units at the time of the rehearsal.
    """

    units: list[RehearsedUnit]
    contexts: list[str]
    digest: str
    database: str = ""
    created_at: str = ""

    @property
    def ok(self) -> bool:
        """No unit failed in the rehearsal."""
        return not any(unit.failed for unit in self.units)

    def as_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "digest": self.digest, "database": self.database,
                "created_at": self.created_at, "contexts": list(self.contexts),
                "ok": self.ok, "units": [unit.as_dict() for unit in self.units]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        if doc.get("format") != PLAN_FORMAT or not isinstance(doc.get("digest"), str):
            raise ConfigError(
                "not a seedguard plan (no digest, or a format this seedguard does not read): "
                "make it with `seedguard plan --out FILE`")
        return cls(units=[RehearsedUnit.from_dict(u) for u in doc.get("units", [])],
                   contexts=[str(c) for c in doc.get("contexts", [])], digest=doc["digest"],
                   database=str(doc.get("database", "")),
                   created_at=str(doc.get("created_at", "")))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan that :meth:`save` (``seedguard plan --out``) wrote."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read the plan {os.fspath(path)!r}: {err.strerror}") \
                from err
        except ValueError as err:
            raise ConfigError(f"the plan {os.fspath(path)!r} is not JSON ({err}): make it "
                              "with `seedguard plan --out FILE`") from err
        if not isinstance(doc, dict):
            raise ConfigError(f"the plan {os.fspath(path)!r} is not a seedguard plan")
        return cls.from_dict(doc)


# -- the digest, computed by the rehearsal and again by apply(plan=...) ----------------


def plan_digest(pending: Sequence[tuple[str, int, str]], contexts: Iterable[str],
                rows: Iterable[tuple[str, int, str, str]]) -> str:
    """The hash a plan is pinned by; see :class:`Plan`."""
    document = {"format": PLAN_FORMAT, "units": [list(unit) for unit in pending],
                "contexts": sorted(set(contexts)), "ledger": sorted(list(row) for row in rows)}
    encoded = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def ledger_rows(state: RowState[PlannedRow] | None, units: Sequence[SeedUnit]
                ) -> list[tuple[str, int, str, str]]:
    """The ledger rows a plan depends on: those of the selected units."""
    if state is None:
        return []
    names = {unit.name for unit in units}
    return [(row.name, row.version, row.checksum or "", row.status)
            for row in state.values() if row.name in names]


def check_reviewed(reviewed: Plan, pending: Sequence[tuple[str, int, str]],
                   contexts: Iterable[str], rows: Iterable[tuple[str, int, str, str]]) -> None:
    """Raise :class:`PlanStale` unless ``reviewed`` is what would be applied now."""
    if plan_digest(pending, contexts, rows) == reviewed.digest:
        return
    changes = _changes(reviewed, pending, contexts)
    raise PlanStale(
        "the plan no longer matches the database or the code, so nothing was applied ("
        + "; ".join(changes) + "): rehearse again with `seedguard plan` and review that plan",
        changes=changes,
    )


def _changes(reviewed: Plan, pending: Sequence[tuple[str, int, str]],
             contexts: Iterable[str]) -> list[str]:
    planned = {unit.name: (unit.version, unit.checksum) for unit in reviewed.units}
    now = {name: (version, checksum) for name, version, checksum in pending}
    changes = []
    for name, (version, checksum) in now.items():
        if name not in planned:
            changes.append(f"{name} v{version} is pending and was not in the plan")
        elif planned[name][0] != version:
            changes.append(f"{name} is v{version} now, v{planned[name][0]} in the plan")
        elif planned[name][1] != checksum:
            changes.append(f"{name} v{version}: its code or data changed since the plan")
    changes += [f"{name} v{version} was in the plan and is no longer pending (applied since?)"
                for name, (version, _) in planned.items() if name not in now]
    if sorted(set(contexts)) != sorted(set(reviewed.contexts)):
        changes.append(f"active contexts {sorted(set(contexts))}, "
                       f"{sorted(set(reviewed.contexts))} in the plan")
    if not changes and list(now) != [unit.name for unit in reviewed.units]:
        changes.append("the units would run in another order")
    return changes or ["the ledger rows of these units changed since the plan"]


