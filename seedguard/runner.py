"""The apply loop: fast path, locks, re-read, one transaction per unit.

1. Fast path, no lock: read the ledger once; if nothing selected is pending
   (and the ledger is current), return. A start-up with nothing to do costs
   one query.
2. File lock, then database lock, both bounded by one deadline.
3. Create or upgrade the ledger, then re-read it under the locks: another
   applier may have finished while we waited.
4. Each pending unit in its own transaction: its ledger row is claimed first,
   as "running" (the primary key, or for a re-applied unit a conditional
   update that row-locks it, makes a second applier that bypassed both locks
   stop here, before any work), then its work runs through a Session joined
   with a SAVEPOINT (which the app's own sessions are made to be: see
   :mod:`seedguard.sessions`), then the row becomes "applied" in the same
   transaction. Nothing may end that transaction early or write around it
   (:mod:`seedguard.guard`). A failure rolls back the unit's work and its row
   together.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from seedguard import journal
from seedguard.alembic import RevisionGate, upgrade_head
from seedguard.checksum import code_checksums, same_algorithm, same_kind
from seedguard.connect import connect
from seedguard.dialects import applicable
from seedguard.errors import (
    DriftError,
    SeedFailed,
    SeedguardError,
    UnitBlocked,
    resolve_advice,
)
from seedguard.eventloop import call_unit, is_async_unit
from seedguard.events import (
    Listener,
    LockAcquired,
    LockWaiting,
    Run,
    RunFinished,
    RunStarted,
    UnitFailed,
    UnitFinished,
    UnitStarted,
    running,
    unit_context,
)
from seedguard.guard import EngineGuard, current_unit, ending
from seedguard.ledger import (
    BLOCKING_STATUSES,
    Comparison,
    Ledger,
    LedgerRow,
    LedgerState,
    PlannedRow,
    RowState,
)
from seedguard.locks import DatabaseLock, Deadline, both_locks, ledger_locks
from seedguard.notify import notify_applied
from seedguard.result import Applied, ApplyResult, Drift, Waiting
from seedguard.sessionclass import UnitClasses, classes_for
from seedguard.sessions import app_sessions, unit_session
from seedguard.unit import SeedUnit
from seedguard.verify import (
    Canary,
    check_outcome,
    restore_session,
    seedguard_code,
    translate_session_errors,
    unit_running_on,
    user_code,
    watch,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.config import Settings
    from seedguard.guard import _Scope
    from seedguard.review import Plan as ReviewedPlan

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What to do with each selected unit, given the ledger."""

    pending: list[SeedUnit] = field(default_factory=list)
    skipped: list[SeedUnit] = field(default_factory=list)
    drifted: list[Drift] = field(default_factory=list)
    ahead: list[SeedUnit] = field(default_factory=list)
    blocked: list[SeedUnit] = field(default_factory=list)
    # Units whose requires_revision is not in the user's alembic history yet.
    waiting: list[Waiting] = field(default_factory=list)
    # Units after a blocked one: they wait until it is resolved.
    stopped: list[SeedUnit] = field(default_factory=list)
    # Units whose (name, version) row exists and is re-applied: the row each replaces.
    replaces: dict[str, LedgerRow] = field(default_factory=dict)
    # Units in ``ahead`` because the ledger holds newer data than theirs.
    newer_data: set[str] = field(default_factory=set)
    checksums: dict[str, str] = field(default_factory=dict)
    # The ledger status of each blocked unit ("running" or "dirty").
    statuses: dict[str, str] = field(default_factory=dict)

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


@translate_session_errors
def run(
    engine: Engine,
    units: Sequence[SeedUnit],
    settings: Settings,
    *,
    dry_run: bool = False,
    strict: bool = False,
    listener: Listener | None = None,
    schema: bool = False,
    scoped_sessions: Sequence[scoped_session[Any]] = (),
    session_class: type[Any] | None = None,
    reviewed: ReviewedPlan | None = None,
) -> ApplyResult:
    """Apply the pending ``units`` (in the given order) to ``engine``.

    ``schema=True`` first runs the user's ``alembic upgrade head`` under the
    same locks, so concurrent deploys never race alembic. ``scoped_sessions``
    return each unit's session while it runs, as the Flask app's
    ``db.session`` does by itself. ``session_class`` is the session class of
    units whose annotation does not name one (:mod:`seedguard.sessionclass`).
    ``reviewed`` (a rehearsal's plan) is
    checked under the locks against what would run; a mismatch raises
    ``PlanStale`` before anything runs. ``listener`` receives this run's unit
    events; the process's subscribers receive all of them (:mod:`seedguard.events`).
    """
    if "opentelemetry.trace" in sys.modules:
        # The app uses OpenTelemetry: spans and metrics (seedguard.otel). A
        # process that never imports it pays one dict lookup here.
        from seedguard.otel import install_if_used

        install_if_used()
    with Run(listener) as emit:
        if not emit.quiet:
            emit(RunStarted(emit.id, len(units), dry_run))
        try:
            result = _run(engine, units, settings, emit, dry_run=dry_run, strict=strict,
                          schema=schema, scoped_sessions=scoped_sessions, reviewed=reviewed,
                          session_class=session_class)
        except BaseException as err:
            if not emit.quiet:
                emit(RunFinished(emit.id, emit.elapsed_ms(), error=err))
            raise
        if not emit.quiet:
            emit(RunFinished(emit.id, emit.elapsed_ms(), result=result))
        return result


def _run(engine: Engine, units: Sequence[SeedUnit], settings: Settings, emit: Run, *,
         dry_run: bool, strict: bool, schema: bool,
         scoped_sessions: Sequence[scoped_session[Any]],
         reviewed: ReviewedPlan | None,
         session_class: type[Any] | None = None) -> ApplyResult:
    running_unit = current_unit()
    if running_unit is not None:
        # Its own file lock is held by this very process: waiting would never end.
        raise SeedguardError(
            f"seedguard.apply() was called inside unit {running_unit.name!r}, which is "
            "itself being applied; apply() is not re-entrant: do the work in the unit "
            "with its session, or declare it as a unit of its own (after=...)"
        )
    # A unit limited to other databases is not applicable here: left out, and
    # the units after it run without it (seedguard.dialects).
    units = applicable(units, engine)
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    checksums, expected = _expected(units)
    now = _look(engine, ledger, expected)
    # A reviewed plan is checked under the locks: "nothing pending" is an
    # answer to check against it too (applied by someone else since?).
    fast = not schema and reviewed is None
    if now is not None and now.all_applied and fast:
        return ApplyResult(skipped=list(units), dry_run=dry_run)
    # Reads the user's alembic graph only if a would-be-pending unit declares
    # requires_revision: the no-op start-up stays one query.
    gate = RevisionGate(settings, engine)

    def planned(look: Comparison | None) -> Plan:
        if look is not None and look.all_applied:
            return Plan(skipped=list(units), checksums=dict(checksums))
        state = look.state if look is not None else LedgerState()
        return plan(units, state, checksums, strict=strict, revisions=gate)

    first = planned(now)
    if dry_run:
        result = first.result(dry_run=True)
        _preview(engine, first.pending, result)
        return result
    # schema=True always takes the locks: the user's schema may be behind. A
    # "running" row is no reason to fail without them: its owner is most
    # likely still at work (a gunicorn worker that started a moment earlier),
    # and the locks make this applier wait for it and look again.
    if now is not None and not first.pending and not first.blocked and fast:
        return first.result()

    # Work to do: import what the units need now, not while holding the locks
    # (sqlalchemy.orm alone takes ~40 ms, paid by every waiting applier:
    # bench/contention.py). The no-op path above never pays it.
    import sqlalchemy.orm  # noqa: F401

    file_lock, db_lock, deadline = ledger_locks(engine, settings)
    settled: list[Plan] = []

    def already_done() -> bool:
        # Once the file lock is had (or, after a wait, just after it): the
        # applier this one waited for, or one that finished a moment before,
        # has usually done everything. One look ends it then, as safely as
        # the lock-free fast path does, without the database lock, the ledger
        # check and the full re-read (bench/contention.py).
        if not fast:
            return False
        look = _look(engine, ledger, expected)
        if look is None:
            return False
        settled.append(planned(look))
        return not settled[0].pending and not settled[0].blocked

    registries = [*scoped_sessions, *app_sessions(engine)]
    elsewhere = unit_running_on(engine)
    if elsewhere is not None:
        # This process holds the locks for that unit: waiting would never end.
        raise SeedguardError(
            f"seedguard.apply() was called while unit {elsewhere.name!r} is being applied "
            "to the same database by this process (from a thread the unit started?); "
            "apply() is not re-entrant: do the work in the unit with its session, or "
            "declare it as a unit of its own (after=...)"
        )
    if not emit.quiet:
        emit(LockWaiting(emit.id, str(file_lock.path), settings.lock_timeout))
    waiting_since = time.perf_counter()
    with seedguard_code(), both_locks(file_lock, db_lock, deadline,
                                      skip_if=already_done) as held:
        if not emit.quiet:
            emit(LockAcquired(emit.id, time.perf_counter() - waiting_since))
        if not held:
            return settled[0].result()
        with _work_connection(engine, db_lock) as conn, EngineGuard(engine) as guard:
            migrated = _upgrade_schema(settings, engine, conn, db_lock) if schema else []
            if db_lock.per_transaction:
                # No session lock behind a transaction pooler: create the ledger in
                # one transaction that holds the transaction-level lock.
                with conn.begin():
                    db_lock.lock_unit(conn, Deadline(settings.lock_timeout))
                    ledger.ensure(conn, commit=False)
            else:
                ledger.ensure(conn)
            # Heads re-read under the locks: another applier (or our own
            # schema upgrade) may have moved them since the fast path.
            rows = ledger.read_current(conn)
            current = plan(units, rows, checksums, strict=strict,
                           revisions=gate.with_connection(conn))
            conn.commit()
            if reviewed is not None:
                from seedguard.review import check_reviewed, ledger_rows

                check_reviewed(reviewed, [(unit.name, unit.version, checksums[unit.name])
                                          for unit in current.pending],
                               settings.contexts, ledger_rows(rows, units))
            result = current.result()
            result.migrated = migrated
            with _unit_transactions(conn):
                for unit in current.pending:
                    db_lock.verify()
                    with unit_context(unit):
                        applied = _apply_one(conn, ledger, unit, current, emit, db_lock,
                                             settings.lock_timeout, guard, registries,
                                             session_class)
                    if applied is None:
                        result.skipped.append(unit)
                    else:
                        result.applied.append(applied)
                    result.pending.remove(unit)
    _raise_blocked(current)
    return result


def _look(engine: Engine, ledger: Ledger, expected: tuple[tuple[str, int, str], ...]
          ) -> Comparison | None:
    """One read of the ledger, without a lock: compared with the units as a whole
    where that answers, else its rows; None when it is missing or behind."""
    with connect(engine) as conn:
        compared = ledger.read_against(conn, expected)
        if compared is not None:
            return compared
        state = ledger.read(conn, full=False)
    return None if state is None else Comparison(False, state)


class _Expected(NamedTuple):
    checksums: Mapping[str, str]
    """Each unit's current checksum, by name."""
    rows: tuple[tuple[str, int, str], ...]
    """``(name, version, checksum)`` of each unit: its ledger row once applied."""


def _expected(units: Sequence[SeedUnit]) -> _Expected:
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
    return _Expected(checksums, tuple((unit.name, unit.version, checksums[unit.name])
                                      for unit in units))


class _Fixed(NamedTuple):
    expected: _Expected
    has_data: bool


@functools.lru_cache(maxsize=16)
def _fixed_expectation(units: tuple[SeedUnit, ...]) -> _Fixed:
    code_units = [unit for unit in units if unit.checksum_fn is None]
    has_data = len(code_units) < len(units)
    checksums = dict(zip([unit.name for unit in code_units],
                         code_checksums([unit.fn for unit in code_units]), strict=True))
    if has_data:  # placeholders; _expected() fills in the data seeds' current ones
        checksums.update((unit.name, "") for unit in units if unit.checksum_fn is not None)
    rows = tuple((unit.name, unit.version, checksums[unit.name]) for unit in units)
    return _Fixed(_Expected(MappingProxyType(checksums), rows), has_data)


def _upgrade_schema(settings: Settings, engine: Engine, conn: Connection,
                    db_lock: DatabaseLock) -> list[str]:
    """The user's ``alembic upgrade head``, under the locks already held."""
    if db_lock.per_transaction:
        # No session lock: hold the transaction-level lock for the whole
        # upgrade by running it in one transaction (alembic leaves a
        # transaction it did not begin to its caller).
        with conn.begin():
            db_lock.lock_unit(conn, Deadline(settings.lock_timeout))
            return upgrade_head(settings, engine, conn, commit=False)
    return upgrade_head(settings, engine, conn)


@contextlib.contextmanager
def _work_connection(engine: Engine, db_lock: DatabaseLock) -> Iterator[Connection]:
    """The connection units run on: the lock's own session when it has one.

    One connection per applier, not two (64 appliers against
    PostgreSQL's max_connections = 100). The lock survives the units' commits
    because it is session-level; the lock object closes the connection.
    """
    if db_lock.work_connection is not None:
        yield db_lock.work_connection
        return
    with connect(engine) as conn:
        yield conn


@contextlib.contextmanager
def _unit_transactions(conn: Connection) -> Iterator[None]:
    """Make each transaction on ``conn`` a real one that starts by taking the write lock.

    ``create_engine(isolation_level="AUTOCOMMIT")`` (also through
    Flask-SQLAlchemy's ``SQLALCHEMY_ENGINE_OPTIONS``) would commit each of a
    unit's statements on its own, its ledger row included; the connection
    gets its own isolation level back instead (SQLAlchemy restores the
    engine's when the connection returns to the pool).

    On SQLite the database itself is the guard behind the file lock (which a
    deleted lock file or another spelling of the path would split): sqlite3
    then opens each unit's transaction, at its first write (the ledger
    claim), with ``BEGIN IMMEDIATE``, so a second applier waits for the
    write lock before it reads the row it claims. A deferred transaction
    would read first and then fail to promote its lock ("database is locked")
    instead of waiting.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    if _autocommit(dbapi_connection):
        conn.execution_options(isolation_level=conn.get_isolation_level())
    if conn.dialect.name != "sqlite" or not hasattr(dbapi_connection, "isolation_level"):
        yield
        return
    saved = dbapi_connection.isolation_level
    dbapi_connection.isolation_level = "IMMEDIATE"
    try:
        yield
    finally:
        dbapi_connection.isolation_level = saved


def _autocommit(dbapi_connection: Any) -> bool:
    # Asked of the driver: Connection.get_isolation_level() reports the
    # underlying level ("READ COMMITTED") even while autocommit is on.
    flag = getattr(dbapi_connection, "autocommit", None)
    if isinstance(flag, bool):  # psycopg, psycopg2, sqlite3 on Python 3.12+ when set
        return flag
    get = getattr(dbapi_connection, "get_autocommit", None)
    if callable(get):  # PyMySQL, mysqlclient
        return bool(get())
    # sqlite3 in its legacy transaction control: None means autocommit.
    return hasattr(dbapi_connection, "isolation_level") and \
        dbapi_connection.isolation_level is None


def _claim(conn: Connection, ledger: Ledger, unit: SeedUnit, checksum: str,
           replaces: LedgerRow | None, scope: _Scope) -> bool:
    """Claim the unit's ledger row in the open transaction; False if another applier won.

    A failed claim is a lost race only when a re-read shows that another
    applier's row is there; anything else (a trigger or CHECK on the ledger,
    an extra NOT NULL column, names that one collation calls equal) fails
    the run, so no unit is ever skipped on a misread error.
    """
    from sqlalchemy.exc import IntegrityError

    refusal: Exception | None = None
    try:
        if ledger.claim(conn, unit.name, unit.version, checksum, replaces=replaces,
                        description=unit.description):
            return True
    except IntegrityError as err:
        refusal = err
    with ending(scope):
        conn.rollback()
        row = ledger.row(conn, unit.name, unit.version)
        conn.rollback()
    if row is not None and row.status == "dirty":
        raise UnitBlocked(_blocked_message(unit, "dirty"), unit=unit)
    if row is not None and row.status == "running":
        raise UnitBlocked(
            f"unit {unit.name!r} v{unit.version} is being applied by another process, or "
            "was interrupted mid-way; run again once it has finished, or if it was "
            f"interrupted run {resolve_advice(unit.name)}",
            unit=unit,
        )
    if row is not None and (replaces is None or row.checksum == checksum):
        log.info("unit %s v%d was applied concurrently by another process; skipped",
                 unit.name, unit.version)
        return False
    if refusal is not None:
        raise SeedFailed(
            f"unit {unit.name!r} v{unit.version}: recording it in the ledger failed "
            f"({_root_error(refusal)}) and no other applier's row explains it; check the "
            f"ledger table {ledger.qualified_name} for triggers, constraints or columns "
            "seedguard did not create. Nothing of the unit ran",
            unit=unit,
        ) from refusal
    raise SeedFailed(
        f"unit {unit.name!r} v{unit.version}: its ledger row changed while this run was "
        "about to re-apply it (another applier with other code or data?); nothing of the "
        "unit ran: run again",
        unit=unit,
    )


def _apply_one(conn: Connection, ledger: Ledger, unit: SeedUnit, current: Plan,
               emit: Run, db_lock: DatabaseLock, lock_timeout: float | None,
               guard: EngineGuard, registries: Sequence[scoped_session[Any]],
               session_class: type[Any] | None = None) -> Applied | None:
    """Apply one unit in its own transaction; None if another applier beat us to it.

    Its events start once its ledger row is claimed: a unit that another
    applier won is not one that ran here.
    """
    checksum = current.checksums[unit.name]
    replaces = current.replaces.get(unit.name)
    # Before anything runs: an annotation that cannot work is a DefinitionError.
    classes = classes_for(unit.fn, is_async_unit(unit), session_class)
    log.info("applying %s v%d", unit.name, unit.version)
    started = time.perf_counter()
    transactional = unit.transactional
    with guard.unit(conn, unit, transactional=transactional) as scope, watch(scope):
        if not transactional:
            return _apply_non_transactional(conn, ledger, unit, checksum, replaces, emit,
                                            started, db_lock, lock_timeout, scope, registries,
                                            classes)
        trans = conn.begin()
        in_work = claimed = False
        canary: Canary | None = None
        try:
            # Transaction lock mode: the lock first, then the claim re-checks under it.
            db_lock.lock_unit(conn, Deadline(lock_timeout))
            if not _claim(conn, ledger, unit, checksum, replaces, scope):
                return None
            canary = Canary(conn)
            canary.plant()
            emit(UnitStarted(unit, emit.id))
            in_work = claimed = True
            with unit_session(conn, registries, session_class=classes.sync) as session, \
                    running(unit, emit), journal.recording(ledger, unit, checksum):
                with user_code():
                    check_outcome(unit, call_unit(unit, session,
                                                  async_class=classes.asynchronous))
                # Flush what the unit left pending: its writes, not a commit of the unit.
                session.commit()
            if scope.refused is not None:
                raise scope.refused  # the unit caught the refusal and went on
            in_work = False
            atomic = canary.intact()
            canary.back_home()
            duration_ms = _elapsed_ms(started)
            ledger.finish(conn, unit.name, unit.version, checksum=checksum,
                          duration_ms=duration_ms)
            # Committed with the unit: a waiter LISTENing (seedguard.readiness)
            # hears it when the unit's work becomes visible, not before.
            notify_applied(conn, ledger)
            with ending(scope):
                trans.commit()
        except BaseException as err:
            # Verified before the rollback: was the work still in the one
            # transaction the unit began (then the rollback leaves nothing)?
            intact = canary is None or canary.rolled_back()
            rolled_back = _abort(conn, scope)
            if canary is not None and rolled_back:
                if not intact and canary.lost(conn):
                    # The connection died, and the canary with it: the server
                    # discarded the open transaction. Only a commit mid-way
                    # can have kept anything, and it would have kept the
                    # "running" claim too: read it on the new connection.
                    intact = not _claim_committed(conn, ledger, unit, scope)
                canary.back_home_after_rollback()
            dirty = rolled_back and not intact
            if dirty:
                _mark_dirty(conn, ledger, unit, checksum, started, scope)
            if isinstance(err, Exception) and scope.refused is not None:
                # What the guard refused is the cause; the unit's own error
                # may only be a consequence of it.
                err = scope.refused
            outcome = _outcome(unit, err, in_work=in_work or not intact,
                               rolled_back=rolled_back and intact, dirty=dirty)
            if claimed:
                emit(UnitFailed(unit, _elapsed_ms(started), outcome, emit.id))
            if outcome is err:
                raise
            raise outcome from err
        finally:
            restore_session(conn)
    if not atomic:
        log.warning("unit %s v%d was not atomic: it ended its own transaction mid-way (a "
                    "COMMIT, an implicit commit or a raw DB-API commit), so its work was "
                    "committed in parts; it succeeded and is recorded applied. Use "
                    "session.commit() (a savepoint) instead, or declare it "
                    "transactional=False", unit.name, unit.version)
    return _finished(unit, duration_ms, emit)


def _apply_non_transactional(conn: Connection, ledger: Ledger, unit: SeedUnit, checksum: str,
                             replaces: LedgerRow | None, emit: Run,
                             started: float, db_lock: DatabaseLock, lock_timeout: float | None,
                             scope: _Scope, registries: Sequence[scoped_session[Any]],
                             classes: UnitClasses) -> Applied | None:
    """Record "running", commit, do the work, then record "applied".

    If the process dies in between, the "running" row stays and blocks the unit
    until an operator resolves it: the work may be half done.
    """
    with conn.begin():
        # Transaction lock mode: the "running" row is what other appliers
        # see while the work runs, unlocked, outside any transaction.
        db_lock.lock_unit(conn, Deadline(lock_timeout))
        if not _claim(conn, ledger, unit, checksum, replaces, scope):
            return None
    emit(UnitStarted(unit, emit.id))
    try:
        with unit_session(conn, registries, transactional=False,
                          session_class=classes.sync) as session, running(unit, emit):
            with user_code():
                check_outcome(unit, call_unit(unit, session,
                                              async_class=classes.asynchronous))
            session.commit()
    except BaseException as err:
        _abort(conn, scope)
        outcome = _outcome(unit, err, in_work=True, rolled_back=False, partial=True)
        emit(UnitFailed(unit, _elapsed_ms(started), outcome, emit.id))
        if outcome is err:
            raise
        raise outcome from err
    with conn.begin():
        ledger.finish(conn, unit.name, unit.version, checksum=checksum,
                      duration_ms=_elapsed_ms(started))
        notify_applied(conn, ledger)
    return _finished(unit, _elapsed_ms(started), emit)


def _abort(conn: Connection, scope: _Scope) -> bool:
    """Roll the unit's transaction back; whether that is known to have happened.

    Also the DB-API connection's own: a commit the guard refused leaves
    SQLAlchemy's transaction object inactive while the database's is open.
    """
    with ending(scope):
        try:
            # Unconditionally: after a refused commit SQLAlchemy holds an
            # inactive transaction that only rollback() clears.
            conn.rollback()
            if conn.invalidated:
                # The driver reported the connection lost. Asking for
                # conn.connection now would open a new one, which during a
                # network cut hangs until the connect times out; the server
                # discards the transaction with the lost session anyway.
                return False
            dbapi_connection: Any = conn.connection.dbapi_connection
            dbapi_connection.rollback()
        except Exception as err:
            # The connection may be gone (killed server-side); the server
            # discards the open transaction then, but this process cannot know.
            log.debug("rollback failed (connection lost?): %s", type(err).__name__)
            return False
    return True


def _claim_committed(conn: Connection, ledger: Ledger, unit: SeedUnit, scope: _Scope) -> bool:
    """Whether the unit's "running" claim is committed (True also when it cannot be read)."""
    try:
        with ending(scope):
            row = ledger.row(conn, unit.name, unit.version)
            conn.rollback()
    except Exception as err:
        log.debug("cannot read the ledger row after a lost connection: %s", _root_error(err))
        return True
    return row is not None and row.status == "running"


def _mark_dirty(conn: Connection, ledger: Ledger, unit: SeedUnit, checksum: str,
                started: float, scope: _Scope) -> bool:
    """Record that a failed unit's transaction was ended mid-way: part of it may be
    committed, its "running" row among it. Whether the row now says "dirty"."""
    try:
        with ending(scope), conn.begin():
            ledger.finish(conn, unit.name, unit.version, checksum=checksum,
                          duration_ms=_elapsed_ms(started), status="dirty")
    except Exception as err:
        log.warning("unit %s v%d: could not mark its ledger row dirty (%s); it stays "
                    "'running', which blocks it the same way", unit.name, unit.version,
                    _root_error(err))
        with contextlib.suppress(Exception), ending(scope):
            conn.rollback()
        return False
    return True


def _outcome(unit: SeedUnit, err: BaseException, *, in_work: bool, rolled_back: bool,
             partial: bool = False, dirty: bool = False) -> BaseException:
    """What a failure inside a unit's transaction is raised as.

    Whatever the unit's own work raised (a DataError from a data seed
    included, and a SystemExit or GeneratorExit, which must not end a run
    as if it succeeded) is that unit's failure; Ctrl-C stays Ctrl-C, and
    seedguard's own errors around the work (lock lost, blocked) pass through.
    """
    if isinstance(err, KeyboardInterrupt):
        return err
    if in_work and isinstance(err, (Exception, SystemExit, GeneratorExit)):
        return _failed(unit, err, partial=partial, rolled_back=rolled_back, dirty=dirty)
    if isinstance(err, Exception) and not isinstance(err, SeedguardError):
        return _failed(unit, err, partial=partial, rolled_back=rolled_back, dirty=dirty)
    return err


def _finished(unit: SeedUnit, duration_ms: int, emit: Run) -> Applied:
    log.info("applied %s v%d in %d ms", unit.name, unit.version, duration_ms)
    emit(UnitFinished(unit, duration_ms, emit.id))
    return Applied(unit.name, unit.version, duration_ms, unit)


def _failed(unit: SeedUnit, err: BaseException, *, partial: bool = False,
            rolled_back: bool = True, dirty: bool = False) -> SeedFailed:
    if dirty:
        what = ("its transaction was ended mid-way (a COMMIT, an implicit commit or a raw "
                "DB-API commit that seedguard could not refuse), so PART OF ITS WORK MAY "
                "ALREADY BE COMMITTED; what was not committed was rolled back. The ledger "
                f"marks {unit.name!r} dirty and later runs refuse it: check its work, then "
                f"run {resolve_advice(unit.name)}")
    elif partial:
        what = ("it is non-transactional and may be half done; inspect it, then run "
                f"{resolve_advice(unit.name)}")
    elif rolled_back:
        what = ("its work and ledger row were rolled back; units before it stay applied. "
                "Fix it and run again")
    else:
        what = ("its transaction could not be rolled back from here (the connection "
                "failed); the database discards an uncommitted transaction when its "
                "connection ends: check with `seedguard status`, then run again")
    if isinstance(err, SystemExit):
        detail = f"SystemExit({err.code!r}): the unit called sys.exit()"
    else:
        detail = _root_error(err)
    hint = ""
    if "database is locked" in detail:
        hint = ("; most likely another connection holds SQLite's write lock: a session or "
                "engine other than the unit's in this process (write through "
                "the session argument, db.session, or apply(scoped_sessions=...)), or "
                "another process writing to the same file")
    return SeedFailed(
        f"unit {unit.name!r} v{unit.version} failed: {detail}{hint}; {what}",
        unit=unit, rolled_back=rolled_back and not partial and not dirty,
    )


def _root_error(err: BaseException) -> str:
    """``Type: first line`` of the driver's own error where there is one.

    SQLAlchemy's wrapper puts its own notes first (for example "raised as a
    result of Query-invoked autoflush"), which hide the cause.
    """
    root = getattr(err, "orig", None) or err
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__


def _preview(engine: Engine, pending: Sequence[SeedUnit], result: ApplyResult) -> None:
    """Ask pending units with a preview hook what they would do (data seeds).

    Each runs in a transaction that is always rolled back, so a dry run writes nothing.
    """
    for unit in pending:
        if unit.preview is None:
            continue
        with connect(engine) as conn, conn.begin() as trans:
            try:
                result.previews[unit.name] = unit.preview(conn)
            finally:
                trans.rollback()


def _raise_blocked(current: Plan) -> None:
    if current.blocked:
        unit = current.blocked[0]
        raise UnitBlocked(_blocked_message(unit, current.statuses.get(unit.name, "running")),
                          unit=unit)


def _blocked_message(unit: SeedUnit, status: str) -> str:
    if status == "dirty":
        why = ("is marked 'dirty': it failed after its transaction was ended mid-way, so "
               "part of its work may already be committed")
    elif not unit.transactional:
        why = "was interrupted mid-way (it is non-transactional)"
    else:
        why = ("has a ledger row left 'running': its transaction was committed early, so "
               "its work may be partly done")
    return (f"unit {unit.name!r} v{unit.version} {why} and blocks the units that depend on "
            f"it; check its work, then run {resolve_advice(unit.name)}")


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
