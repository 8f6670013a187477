"""Planning: what a run does with each selected unit, given the ledger.

One rule for a unit's state (:func:`plan`): ``apply()`` acts on it, ``plan()``
rehearses it, ``status``, ``check``, ``wait`` and ``stamp --all`` report or
record it. :func:`expected` is what the ledger holds once every unit is
applied, and :func:`look` the one lock-free read that compares the two (the
fast path of ``apply()``, ``wait`` and the fleet's first pass).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from seedguard.checksum import code_checksums, same_algorithm, same_kind
from seedguard.connect import connect
from seedguard.dialects import applicable
from seedguard.errors import DriftError
from seedguard.ledger import BLOCKING_STATUSES, Comparison, Ledger, LedgerRow, PlannedRow, RowState
from seedguard.result import ApplyResult, Drift, Waiting
from seedguard.unit import SeedUnit

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class Plan:
    """What to do with each selected unit, given the ledger.

    A plain class, not a dataclass: every first ``apply()`` defines it, and
    defining a dataclass costs ~300 us (bench/targets.py, target 2b).
    """

    def __init__(self, *, skipped: list[SeedUnit] | None = None,
                 checksums: dict[str, str] | None = None) -> None:
        self.pending: list[SeedUnit] = []
        self.skipped: list[SeedUnit] = skipped if skipped is not None else []
        self.drifted: list[Drift] = []
        self.ahead: list[SeedUnit] = []
        self.blocked: list[SeedUnit] = []
        # Units whose requires_revision is not in the user's alembic history yet.
        self.waiting: list[Waiting] = []
        # Units after a blocked one: they wait until it is resolved.
        self.stopped: list[SeedUnit] = []
        # Units whose (name, version) row exists and is re-applied: the row each replaces.
        self.replaces: dict[str, LedgerRow] = {}
        # Units in ``ahead`` because the ledger holds newer data than theirs.
        self.newer_data: set[str] = set()
        self.checksums: dict[str, str] = checksums if checksums is not None else {}
        # The ledger status of each blocked unit ("running" or "dirty").
        self.statuses: dict[str, str] = {}

    def __repr__(self) -> str:
        return (f"Plan(pending={self.pending!r}, skipped={self.skipped!r}, "
                f"drifted={self.drifted!r}, ahead={self.ahead!r}, blocked={self.blocked!r})")

    def result(self, *, dry_run: bool = False) -> ApplyResult:
        return ApplyResult(skipped=list(self.skipped), pending=list(self.pending),
                           drifted=list(self.drifted), ahead=list(self.ahead),
                           waiting=list(self.waiting), dry_run=dry_run)


def plan(units: Sequence[SeedUnit], state: RowState[PlannedRow], checksums: Mapping[str, str], *,
         strict: bool = False, revisions: Callable[[SeedUnit], bool] | None = None,
         report: bool = False) -> Plan:
    """Sort ``units`` (already in run order) into pending, skipped, drifted, ahead, blocked.

    The one rule for a unit's state: ``apply()`` acts on it, ``status`` and
    ``check`` report it (``report=True``: drift is listed, never raised).

    ``checksums`` holds each unit's current checksum, taken once per run: a
    run plans up to three times, and a data seed's checksum hashes its file.

    ``revisions`` (a :class:`seedguard.alembic.RevisionGate`) says whether a
    unit's ``requires_revision`` is applied; it is only asked about units that
    would otherwise be pending, so the graph is read only when one declares a
    requirement. Without it, requirements are not checked.
    """
    result = Plan()
    stopped: set[str] = set()
    waiting: dict[str, Waiting] = {}
    result.checksums = dict(checksums)
    for unit in units:
        checksum = checksums[unit.name]
        row = state.get((unit.name, unit.version))
        if row is not None and row.checksum == checksum and row.status == "applied" \
                and not (stopped and unit.after and any(dep in stopped for dep in unit.after)):
            # The common case, first: applied, unchanged, nothing before it stopped.
            result.skipped.append(unit)
            continue
        if unit.after and any(dep in stopped for dep in unit.after):
            stopped.add(unit.name)
            result.stopped.append(unit)
            continue
        behind = (next((waiting[dep] for dep in unit.after if dep in waiting), None)
                  if unit.after and waiting else None)
        if behind is not None and row is None:
            # A unit after one that waits for its schema waits too
            # (rather than failing on tables that do not exist yet).
            waiting[unit.name] = Waiting(unit.name, unit.version, behind.revision, unit,
                                         via=behind.via or behind.name)
            result.waiting.append(waiting[unit.name])
            continue
        if row is not None and row.status in BLOCKING_STATUSES:
            # A non-transactional unit was interrupted mid-way, or a
            # transactional one failed after its transaction was ended early
            # ("dirty"): its work may be half done, so neither it nor anything
            # after it may run until an operator says which (`seedguard resolve`).
            result.blocked.append(unit)
            result.statuses[unit.name] = row.status
            stopped.add(unit.name)
            continue
        if row is None:
            latest = state.latest(unit.name)
            if latest is not None and latest.version > unit.version:
                result.ahead.append(unit)
            elif unit.requires_revision and revisions is not None and not revisions(unit):
                # Its schema is not there yet; report it, do not fail.
                waiting[unit.name] = Waiting(unit.name, unit.version, unit.requires_revision,
                                             unit)
                result.waiting.append(waiting[unit.name])
            else:
                result.pending.append(unit)
            continue
        if row.checksum and not same_kind(row.checksum, checksum):
            # Code replaced by data under one name, or the other way round:
            # the recorded work is not this unit's work at all.
            result.pending.append(unit)
            result.replaces[unit.name] = row
            continue
        if row.checksum and same_algorithm(row.checksum, checksum) and row.checksum != checksum:
            if unit.on_change == "rerun":
                if getattr(row, "superseded", None) and row.supersedes(checksum):
                    # This data was applied once and then replaced by newer
                    # data (an old replica during a rolling deploy): never go
                    # back to it; `seedguard forget` is the explicit way back.
                    result.ahead.append(unit)
                    result.newer_data.add(unit.name)
                    continue
                # Re-applying on change is this unit's policy (data seeds by
                # default): pending work, not drift to warn about.
                result.pending.append(unit)
                result.replaces[unit.name] = row
                continue
            drift = Drift(unit.name, unit.version, row.checksum, checksum, unit)
            result.drifted.append(drift)
            if unit.on_change == "error" and not report:
                raise DriftError(drift.message(), drifted=[drift])
        result.skipped.append(unit)
    if strict and result.drifted and not report:
        raise DriftError(
            "; ".join(d.message() for d in result.drifted) + " (strict mode refuses drift)",
            drifted=result.drifted,
        )
    return result


class FirstLook(NamedTuple):
    """A run's first, lock-free look: what it compared and what it found."""

    units: Sequence[SeedUnit]
    """The selected units that apply on the engine's database, in run order."""
    expected: Expected
    """Their checksums and ledger rows once applied (:func:`expected`)."""
    seen: Comparison | None
    """The ledger compared with them (:func:`look`); None: missing, behind, or not read."""
    looked: bool = True
    """False when the ledger was not read: the caller had just read it and found work."""


def first_look(engine: Engine, ledger: Ledger, units: Sequence[SeedUnit], *,
               read: bool = True) -> FirstLook:
    """The units that apply on ``engine`` (:func:`seedguard.dialects.applicable`), their
    checksums, and (unless ``read`` is false) one lock-free read of the ledger
    compared with them."""
    units = applicable(units, engine)
    found = expected(units)
    if not read:
        return FirstLook(units, found, None, looked=False)
    return FirstLook(units, found, look(engine, ledger, found.rows))


def look(engine: Engine, ledger: Ledger, expected: tuple[tuple[str, int, str], ...]
         ) -> Comparison | None:
    """One read of the ledger, without a lock: compared with the units as a whole
    where that answers, else its rows; None when it is missing or behind."""
    with connect(engine) as conn:
        compared = ledger.read_against(conn, expected)
        if compared is not None:
            return compared
        state = ledger.read(conn, full=False)
    return None if state is None else Comparison(False, state)


class Expected(NamedTuple):
    checksums: Mapping[str, str]
    """Each unit's current checksum, by name."""
    rows: tuple[tuple[str, int, str], ...]
    """``(name, version, checksum)`` of each unit: its ledger row once applied."""


def expected(units: Sequence[SeedUnit]) -> Expected:
    """What the ledger holds once every unit of ``units`` is applied.

    A code unit's checksum cannot change while its function is loaded, so a
    selection's code checksums are gathered once per process (a warm no-op at
    1,000 units spent a third of its time here: bench/targets.py); a data
    seed's checksum hashes its file, which may change, on every run.
    """
    fixed = _fixed_expectation(tuple(units))
    data = [unit for unit in units if unit.checksum_fn is not None] if fixed.has_data else ()
    if not data:
        return fixed.expected
    checksums = dict(fixed.expected.checksums)
    checksums.update((unit.name, unit.checksum()) for unit in data)
    return Expected(checksums, tuple((unit.name, unit.version, checksums[unit.name])
                                      for unit in units))


class _Fixed(NamedTuple):
    expected: Expected
    has_data: bool


@functools.lru_cache(maxsize=16)
def _fixed_expectation(units: tuple[SeedUnit, ...]) -> _Fixed:
    code_units = [unit for unit in units if unit.checksum_fn is None]
    has_data = len(code_units) < len(units)
    checksums = dict(zip([unit.name for unit in code_units],
                         code_checksums([unit.fn for unit in code_units]), strict=True))
    if has_data:  # placeholders; expected() fills in the data seeds' current ones
        checksums.update((unit.name, "") for unit in units if unit.checksum_fn is not None)
    rows = tuple((unit.name, unit.version, checksums[unit.name]) for unit in units)
    return _Fixed(Expected(MappingProxyType(checksums), rows), has_data)
