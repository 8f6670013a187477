"""Ledger administration behind ``seedguard status``, ``history``, ``check``, ``stamp``,
``forget`` and ``resolve``: library calls that return results, never print or exit.

Each is importable from :mod:`seedguard.api` too, where it was first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Union

from seedguard import config as _config
from seedguard.connect import engine_for, read_only_engine
from seedguard.dialects import applicable
from seedguard.errors import ConfigError, resolve_advice
from seedguard.registry import SeedsSpec, active, discover, order
from seedguard.reports import HistoryResult, LedgerChange, StatusResult, UnitState, UnitStatus
from seedguard.unit import SeedUnit, validate_version

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from seedguard.ledger import Ledger, LedgerRow, LedgerState
    from seedguard.planning import Plan


# Each takes what apply() takes to find the database and the units (a Settings
# from config.resolve(), an Engine, a URL or None, plus seeds=/contexts=) and
# returns a result from seedguard.reports; none prints or exits. The ledger is
# only written under the same two locks apply() holds, after Ledger.ensure().

Bind = Union["_config.Settings", "Engine", str, None]


def _settings(bind: Bind, *, seeds: SeedsSpec = None,
              contexts: Iterable[str] | None = None) -> _config.Settings:
    if isinstance(bind, _config.Settings):
        return bind
    return _config.resolve(bind, seeds=seeds, contexts=contexts)


def status(bind: Bind = None, *, seeds: SeedsSpec = None,
           contexts: Iterable[str] | None = None) -> StatusResult:
    """Every selected unit's state, the orphaned ledger rows, and who holds the locks now.

    Reads only: no lock is taken and nothing is written, so it answers while
    another process is applying (and names that process).
    """
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import HEAD_REVISION, Ledger, LedgerState
    from seedguard.locks import FileLock, database_lock, default_lock_path, lock_key
    from seedguard.locks.lease import read_holder

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    every = order(discover(settings.seeds))
    selected = active(every, settings.contexts)
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with read_only_engine(settings) as engine:
        units = applicable(selected, engine)
        with connect(engine) as conn:
            state, revision = ledger.read_any(conn)
        file_lock = FileLock(settings.lock_path
                             or default_lock_path(engine.url, settings.ledger_schema))
        db_lock = database_lock(engine, lock_key(engine, ledger.name, ledger.schema))
        result = StatusResult(
            url=safe_url(engine.url),
            ledger=ledger.qualified_name,
            ledger_exists=state is not None,
            ledger_revision=revision,
            ledger_current=revision is None or revision == HEAD_REVISION,
            file_lock=str(file_lock.path),
            file_lock_holder=file_lock.holder(),
            database_lock_holder=db_lock.holder(),
        )
        with connect(engine) as conn:
            leased = read_holder(db_lock, conn)
        result.holder = leased.as_dict() if leased is not None else None
        rows = state if state is not None else LedgerState()
        # The planner's rule, in its reporting mode: what upgrade would do is
        # what status says (the alembic graph is read only for would-be
        # pending units that declare requires_revision).
        from seedguard.alembic import RevisionGate
        from seedguard.planning import plan

        checksums = {unit.name: unit.checksum() for unit in units}
        planned = plan(units, rows, checksums, revisions=RevisionGate(settings, engine),
                       report=True)
    states = _states(planned)
    planned_names = {unit.name for unit in units}
    for unit in units:
        result.units.append(_unit_status(unit, rows, planned, states))
    # Inapplicable: selected, but limited to other databases than this one.
    for unit in selected:
        if unit.name not in planned_names:
            latest = rows.latest(unit.name)
            result.units.append(UnitStatus(
                name=unit.name, state="inapplicable", version=unit.version,
                recorded_version=latest.version if latest is not None else None,
                applied_at=latest.applied_at if latest is not None else None,
                applied_by=latest.applied_by if latest is not None else None,
                description=unit.description,
                dialects=tuple(sorted(unit.dialects or ())),
            ))
    # Inactive: recorded, but left out by the active contexts; listing them
    # keeps `status` from hiding what a dev or test run put in the database.
    chosen = {unit.name for unit in selected}
    for unit in every:
        latest = rows.latest(unit.name)
        if unit.name not in chosen and latest is not None:
            result.units.append(UnitStatus(
                name=unit.name, state="inactive", version=unit.version,
                recorded_version=latest.version, applied_at=latest.applied_at,
                applied_by=latest.applied_by, description=unit.description,
                contexts=tuple(sorted(unit.contexts or ())),
            ))
    # Orphaned: recorded, but no unit of that name exists in the code any more
    # (units only filtered out by contexts still exist, so they are not orphans).
    declared = {unit.name for unit in every}
    for name in sorted({name for name, _ in rows} - declared):
        latest = rows.latest(name)
        assert latest is not None
        result.units.append(UnitStatus(
            name=name, state="orphaned", version=None, recorded_version=latest.version,
            applied_at=latest.applied_at, applied_by=latest.applied_by,
        ))
    return result


def check(bind: Bind = None, *, seeds: SeedsSpec = None,
          contexts: Iterable[str] | None = None) -> StatusResult:
    """:func:`status`, for asking whether the database is done: ``result.ok`` is False
    when a unit is pending, drifted or blocked (``seedguard check`` exits 3 then)."""
    return status(bind, seeds=seeds, contexts=contexts)


def _states(planned: Plan) -> dict[str, tuple[UnitState, str | None]]:
    """Unit name -> (state, what it waits for) as :func:`status` reports it."""
    states: dict[str, tuple[UnitState, str | None]] = {}
    groups: tuple[tuple[UnitState, list[SeedUnit]], ...] = (
        ("applied", planned.skipped), ("pending", planned.pending), ("ahead", planned.ahead),
        ("blocked", planned.blocked),
        # After a blocked unit: pending until it is resolved.
        ("pending", planned.stopped),
    )
    for state, units in groups:
        for unit in units:
            states[unit.name] = (state, None)
    for drift in planned.drifted:  # also among the skipped: drift wins
        states[drift.name] = ("drifted", None)
    for waiting in planned.waiting:
        states[waiting.name] = ("waiting", waiting.revision)
    return states


def _unit_status(unit: SeedUnit, rows: LedgerState, planned: Plan,
                 states: dict[str, tuple[UnitState, str | None]]) -> UnitStatus:
    state, waits_for = states[unit.name]
    row = rows.get(unit.key) or rows.latest(unit.name)
    changed = None
    if unit.name in planned.replaces or unit.name in planned.newer_data:
        # Re-applied on change, or the database already has newer data.
        changed = "data" if unit.preview is not None else "code"
    return UnitStatus(
        name=unit.name, state=state, version=unit.version,
        recorded_version=row.version if row is not None else None,
        applied_at=row.applied_at if row is not None else None,
        applied_by=row.applied_by if row is not None else None,
        description=unit.description, changed=changed, waits_for=waits_for,
    )


def history(bind: Bind = None) -> HistoryResult:
    """The ledger's rows, newest first (empty when there is no ledger yet)."""
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import Ledger

    settings = _settings(bind)
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with read_only_engine(settings) as engine, connect(engine) as conn:
        state, _ = ledger.read_any(conn)
        url = safe_url(engine.url)
    rows = state.rows() if state is not None else []
    rows.sort(key=lambda r: (r.applied_at, r.name, r.version), reverse=True)
    return HistoryResult(url=url, ledger=ledger.qualified_name, rows=rows)


@contextlib.contextmanager
def _ledger_locked(settings: _config.Settings) -> Iterator[tuple[Connection, Ledger]]:
    """A connection and the current ledger, under the file and database locks apply() takes."""
    from seedguard.connect import connect
    from seedguard.context import locked_transaction
    from seedguard.ledger import Ledger
    from seedguard.locks import both_locks, ledger_locks

    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with engine_for(settings) as engine:
        file_lock, db_lock, deadline = ledger_locks(engine, settings)
        # lock_mode="transaction" (PgBouncer): no session lock is held, so the
        # read and the write share one transaction that holds the
        # transaction-level lock, like each unit of apply().
        with both_locks(file_lock, db_lock, deadline), connect(engine) as conn, \
                locked_transaction(conn, db_lock, deadline) as commit:
            ledger.ensure(conn, commit=commit)
            # On an error nothing is committed: nothing is written.
            yield conn, ledger


def _declared(settings: _config.Settings, name: str) -> SeedUnit | None:
    for unit in discover(settings.seeds):
        if unit.name == name:
            return unit
    return None


def _no_such_unit(name: str, settings: _config.Settings) -> ConfigError:
    where = f"the seeds {settings.seeds!r}" if settings.seeds else "the units declared so far"
    return ConfigError(
        f"no unit named {name!r} in {where}; check the name with `seedguard status`, or "
        "point --seeds / SEEDGUARD_SEEDS at the module that declares it"
    )


def stamp(bind: Bind, name: str, *, version: int | None = None,
          seeds: SeedsSpec = None) -> LedgerChange:
    """Record unit ``name`` as applied without running it (baselining a restored database).

    ``version`` defaults to the code's. The current checksum is recorded when
    the version is the code's, so a drifted unit stamped again accepts its new
    code ("restamped"). An interrupted unit is settled with :func:`resolve`.
    """
    settings = _settings(bind, seeds=seeds)
    unit = _declared(settings, name)
    if unit is None:
        raise _no_such_unit(name, settings)
    version = unit.version if version is None else version
    validate_version(name, version)
    checksum = unit.checksum() if version == unit.version else None
    with _ledger_locked(settings) as (conn, ledger):
        action = record_stamp(conn, ledger, ledger.read_current(conn).get((name, version)),
                              name, version, checksum)
    return LedgerChange(name, action, [version] if action != "unchanged" else [])


def record_stamp(conn: Connection, ledger: Ledger, row: LedgerRow | None, name: str,
                 version: int, checksum: str | None) -> str:
    """Record ``name`` v``version`` as applied (``row``: its current ledger row); the action."""
    if row is None:
        ledger.insert(conn, name, version, checksum)
        return "stamped"
    from seedguard.ledger import BLOCKING_STATUSES

    if row.status in BLOCKING_STATUSES:
        raise ConfigError(
            f"unit {name!r} v{version} may be partly applied ({row.status}); settle it with "
            f"{resolve_advice(name)}, not stamp"
        )
    if checksum is None or row.checksum == checksum:
        return "unchanged"
    ledger.finish(conn, name, version, checksum=checksum,
                  duration_ms=row.duration_ms or 0, was="applied")
    return "restamped"


def forget(bind: Bind, name: str, *, version: int | None = None,
           seeds: SeedsSpec = None) -> LedgerChange:
    """Remove the ledger rows of ``name`` (every version, or ``version``) so it runs again.

    Nothing recorded is "unchanged"; a name neither recorded nor declared is
    a ConfigError (most likely a typo).
    """
    settings = _settings(bind, seeds=seeds)
    if version is not None:
        validate_version(name, version)
    with _ledger_locked(settings) as (conn, ledger):
        versions = sorted(v for n, v in ledger.read_current(conn)
                          if n == name and version in (None, v))
        for each in versions:
            ledger.delete(conn, name, each)
    if not versions and _declared(settings, name) is None:
        raise _no_such_unit(name, settings)
    return LedgerChange(name, "forgotten" if versions else "unchanged", versions)


def forget_all(bind: Bind = None) -> list[LedgerChange]:
    """Remove every ledger row, so every unit runs again (after the tables were reset).

    Under the same locks as :func:`forget`; returns one change per unit name
    that had rows (an empty list: the ledger was empty already).
    """
    settings = _settings(bind)
    changes: list[LedgerChange] = []
    with _ledger_locked(settings) as (conn, ledger):
        recorded: dict[str, list[int]] = {}
        for name, version in ledger.read_current(conn):
            recorded.setdefault(name, []).append(version)
        for name in sorted(recorded):
            ledger.delete(conn, name)
            changes.append(LedgerChange(name, "forgotten", sorted(recorded[name])))
    return changes


def resolve(bind: Bind, name: str, *, outcome: str) -> LedgerChange:
    """Settle a blocked unit: a non-transactional one interrupted mid-way (a ledger row
    with status "running"), or a transactional one that failed after its transaction
    was ended mid-way ("dirty").

    ``outcome="applied"``: its work is complete, record it applied.
    ``outcome="retry"``: remove the row, so the next apply runs it again.
    Refuses when ``name`` has no such row.
    """
    if outcome not in ("applied", "retry"):
        raise ConfigError(f"resolve outcome must be 'applied' or 'retry', not {outcome!r}")
    from seedguard.ledger import BLOCKING_STATUSES

    settings = _settings(bind)
    with _ledger_locked(settings) as (conn, ledger):
        rows = [row for row in ledger.read_current(conn).rows()
                if row.name == name and row.status in BLOCKING_STATUSES]
        if not rows:
            raise ConfigError(
                f"unit {name!r} is not interrupted (no ledger row of it has status "
                "'running' or 'dirty'); resolve only settles blocked units: `seedguard "
                "status` lists them"
            )
        for row in rows:
            if outcome == "applied":
                ledger.finish(conn, name, row.version, checksum=row.checksum,
                              duration_ms=row.duration_ms or 0, was=row.status)
            else:
                ledger.delete(conn, name, row.version)
    return LedgerChange(name, f"resolved-{outcome}", [row.version for row in rows])
