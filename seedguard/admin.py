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
           contexts: Iterable[str] | None = None, bind_key: str | None = None) -> StatusResult:
    """Every selected unit's state, the orphaned ledger rows, and who holds the locks now.

    Reads only: no lock is taken and nothing is written, so it answers while
    another process is applying (and names that process).

    :param bind: as for :func:`seedguard.apply` (or resolved ``Settings``).
    :param seeds: as for :func:`seedguard.apply`.
    :param contexts: as for :func:`seedguard.apply`.
    :param bind_key: as for :func:`seedguard.apply`: one Flask-SQLAlchemy bind's
        units and ledger; ``None`` inside an app context covers every bind (the
        result's ``units`` list them all; ``binds`` holds each other bind's
        own result, with its database, ledger and lock holders).
    """
    from seedguard.binds import targets

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    every = order(discover(settings.seeds))
    found = targets(settings, every, bind_key=bind_key)
    results = [_status_of(each.settings, each.units) for each in found]
    first = results[0]
    for each, result in zip(found[1:], results[1:], strict=True):
        first.units.extend(result.units)
        first.binds[str(each.key)] = result
    return first


def _status_of(settings: _config.Settings, every: list[SeedUnit]) -> StatusResult:
    """:func:`status` of one database: ``every`` is the units declared for it, in order."""
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import HEAD_REVISION, Ledger, LedgerState
    from seedguard.locks import FileLock, database_lock, default_lock_path, lock_key
    from seedguard.locks.lease import read_holder

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
          contexts: Iterable[str] | None = None, bind_key: str | None = None) -> StatusResult:
    """:func:`status`, for asking whether the database is done: ``result.ok`` is False
    when a unit is pending, drifted or blocked (``seedguard check`` exits 3 then); inside
    a Flask app context every bind's database is asked (``bind_key`` picks one)."""
    return status(bind, seeds=seeds, contexts=contexts, bind_key=bind_key)


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


def history(bind: Bind = None, *, bind_key: str | None = None) -> HistoryResult:
    """The ledger's rows, newest first (empty when there is no ledger yet).

    :param bind: as for :func:`seedguard.apply` (or resolved ``Settings``).
    :param bind_key: one Flask-SQLAlchemy bind's ledger; ``None`` inside an app
        context covers the default database and every bind whose database has
        a ledger (the result's ``rows`` hold them all, ``binds`` each other
        bind's own result).
    """
    from seedguard.binds import databases

    settings = _settings(bind)
    found = [(key, *_history_of(each)) for key, each in databases(settings, bind_key=bind_key)]
    first = found[0][1]
    for key, result, exists in found[1:]:
        if exists:  # another bind's database without a ledger: seedguard has not been there
            first.rows.extend(result.rows)
            first.binds[str(key)] = result
    first.rows.sort(key=lambda r: (r.applied_at, r.name, r.version), reverse=True)
    return first


def _history_of(settings: _config.Settings) -> tuple[HistoryResult, bool]:
    """:func:`history` of one database, and whether its ledger exists."""
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import Ledger

    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with read_only_engine(settings) as engine, connect(engine) as conn:
        state, _ = ledger.read_any(conn)
        url = safe_url(engine.url)
    rows = state.rows() if state is not None else []
    rows.sort(key=lambda r: (r.applied_at, r.name, r.version), reverse=True)
    return HistoryResult(url=url, ledger=ledger.qualified_name, rows=rows), state is not None


def _recorded(settings: _config.Settings, name: str | None = None) -> bool:
    """Whether the ledger of ``settings``' database exists and (if ``name``) has rows of it."""
    from seedguard.connect import connect
    from seedguard.ledger import Ledger

    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with read_only_engine(settings) as engine, connect(engine) as conn:
        state, _ = ledger.read_any(conn)
    if state is None:
        return False
    return name is None or any(recorded == name for recorded, _ in state)


def unit_home(settings: _config.Settings, name: str, *, bind_key: str | None = None
              ) -> tuple[SeedUnit | None, _config.Settings]:
    """The unit ``name`` (``None`` if not declared) and the settings of the database whose
    ledger records it: a declared unit's bind's (:func:`seedguard.binds.home`); for a
    name no unit has (an orphaned row), the database whose ledger holds it.

    :raises ConfigError: ``bind_key`` is not the unit's bind; an orphaned name
        recorded in several binds' ledgers, with no ``bind_key`` to pick one.
    """
    from seedguard.binds import databases, describe, home

    unit = _declared(settings, name)
    if unit is not None:
        return unit, home(settings, unit, bind_key=bind_key)
    found = databases(settings, bind_key=bind_key)
    if len(found) == 1:
        return None, found[0][1]
    holding = [(key, each) for key, each in found if _recorded(each, name)]
    if len(holding) > 1:
        names = ", ".join(describe(key) for key, _ in holding)
        raise ConfigError(
            f"no unit named {name!r} is declared, and rows of that name are in the ledgers "
            f"of {names}; pick one with bind_key= (--bind KEY)"
        )
    return None, (holding or found)[0][1]


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
          seeds: SeedsSpec = None, bind_key: str | None = None) -> LedgerChange:
    """Record unit ``name`` as applied without running it (baselining a restored database).

    ``version`` defaults to the code's. The current checksum is recorded when
    the version is the code's, so a drifted unit stamped again accepts its new
    code ("restamped"). An interrupted unit is settled with :func:`resolve`.

    :param bind: as for :func:`seedguard.apply` (or resolved ``Settings``).
    :param name: the unit's name.
    :param version: the version to record (default: the code's).
    :param seeds: as for :func:`seedguard.apply`.
    :param bind_key: the Flask-SQLAlchemy bind the unit is on. Inside an app
        context the unit is recorded in its own bind's ledger, under that
        database's locks, and ``bind_key`` only checks that it is that bind;
        outside one, ``bind``'s database is bind ``bind_key``'s.
    """
    settings = _settings(bind, seeds=seeds)
    unit, settings = unit_home(settings, name, bind_key=bind_key)
    if unit is None:
        raise _no_such_unit(name, settings)
    version = unit.version if version is None else version
    validate_version(name, version)
    checksum = unit.checksum() if version == unit.version else None
    with _ledger_locked(settings) as (conn, ledger):
        action = record_stamp(conn, ledger, ledger.read_current(conn).get((name, version)),
                              name, version, checksum)
    return LedgerChange(name, action, [version] if action != "unchanged" else [], bind=unit.bind)


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
           seeds: SeedsSpec = None, bind_key: str | None = None) -> LedgerChange:
    """Remove the ledger rows of ``name`` (every version, or ``version``) so it runs again.

    Nothing recorded is "unchanged"; a name neither recorded nor declared is
    a ConfigError (most likely a typo).

    :param bind: as for :func:`stamp`.
    :param name: the unit's name.
    :param version: only this version (default: every version).
    :param seeds: as for :func:`seedguard.apply`.
    :param bind_key: as for :func:`stamp`; a name no unit has any more is
        looked for in every bind's ledger inside an app context.
    """
    settings = _settings(bind, seeds=seeds)
    if version is not None:
        validate_version(name, version)
    unit, settings = unit_home(settings, name, bind_key=bind_key)
    with _ledger_locked(settings) as (conn, ledger):
        versions = sorted(v for n, v in ledger.read_current(conn)
                          if n == name and version in (None, v))
        for each in versions:
            ledger.delete(conn, name, each)
    if not versions and unit is None:
        raise _no_such_unit(name, settings)
    return LedgerChange(name, "forgotten" if versions else "unchanged", versions,
                        bind=_key_of(unit, bind_key))


def _key_of(unit: SeedUnit | None, bind_key: str | None) -> str | None:
    return unit.bind if unit is not None else bind_key


def forget_all(bind: Bind = None, *, bind_key: str | None = None) -> list[LedgerChange]:
    """Remove every ledger row, so every unit runs again (after the tables were reset).

    Under the same locks as :func:`forget`; returns one change per unit name
    that had rows (an empty list: the ledger was empty already).

    :param bind: as for :func:`stamp`.
    :param bind_key: one Flask-SQLAlchemy bind's ledger; ``None`` inside an app
        context empties the default database's ledger and every bind's that
        exists, each under its own database's locks.
    """
    from seedguard.binds import databases

    settings = _settings(bind)
    changes: list[LedgerChange] = []
    for index, (key, each) in enumerate(databases(settings, bind_key=bind_key)):
        # Another bind's database without a ledger has nothing to forget: no
        # ledger table is created in it.
        if index > 0 and not _recorded(each):
            continue
        changes.extend(_forget_all_of(each, key))
    return changes


def _forget_all_of(settings: _config.Settings, key: str | None) -> list[LedgerChange]:
    changes: list[LedgerChange] = []
    with _ledger_locked(settings) as (conn, ledger):
        recorded: dict[str, list[int]] = {}
        for name, version in ledger.read_current(conn):
            recorded.setdefault(name, []).append(version)
        for name in sorted(recorded):
            ledger.delete(conn, name)
            changes.append(LedgerChange(name, "forgotten", sorted(recorded[name]), bind=key))
    return changes


def resolve(bind: Bind, name: str, *, outcome: str, seeds: SeedsSpec = None,
            bind_key: str | None = None) -> LedgerChange:
    """Settle a blocked unit: a non-transactional one interrupted mid-way (a ledger row
    with status "running"), or a transactional one that failed after its transaction
    was ended mid-way ("dirty").

    ``outcome="applied"``: its work is complete, record it applied.
    ``outcome="retry"``: remove the row, so the next apply runs it again.
    Refuses when ``name`` has no such row.

    :param bind: as for :func:`stamp`.
    :param name: the unit's name.
    :param outcome: ``"applied"`` or ``"retry"``.
    :param seeds: as for :func:`seedguard.apply` (where the unit's bind is declared).
    :param bind_key: as for :func:`forget`.
    """
    if outcome not in ("applied", "retry"):
        raise ConfigError(f"resolve outcome must be 'applied' or 'retry', not {outcome!r}")
    from seedguard.ledger import BLOCKING_STATUSES

    unit, settings = unit_home(_settings(bind, seeds=seeds), name, bind_key=bind_key)
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
    return LedgerChange(name, f"resolved-{outcome}", [row.version for row in rows],
                        bind=_key_of(unit, bind_key))
