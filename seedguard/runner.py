"""The apply loop: fast path, locks, re-read, one transaction per unit.

1. Fast path, no lock: read the ledger once; if nothing selected is pending
   (and the ledger is current), return. A start-up with nothing to do costs
   one query.
2. File lock, then database lock, both bounded by one deadline.
3. Create or upgrade the ledger, then re-read it under the locks: another
   applier may have finished while we waited.
4. Each pending unit in its own transaction: its ledger row first (the primary
   key makes a second applier that bypassed both locks fail here, before any
   work), then its work through a Session joined with a SAVEPOINT, then the
   row's outcome. A failure rolls back the unit's work and its row together.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seedguard.alembic import RevisionGate, upgrade_head
from seedguard.checksum import same_algorithm
from seedguard.connect import connect
from seedguard.errors import DriftError, SeedFailed, SeedguardError, UnitBlocked
from seedguard.events import Listener, UnitFinished, UnitStarted, running
from seedguard.ledger import Ledger, LedgerState, PlannedRow, RowState
from seedguard.locking import DatabaseLock, Deadline, both_locks, ledger_locks
from seedguard.result import Applied, ApplyResult, Drift, Waiting
from seedguard.unit import SeedUnit

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Transaction

    from seedguard.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What to do with each selected unit, given the ledger."""

    pending: list[SeedUnit] = field(default_factory=list)
    skipped: list[SeedUnit] = field(default_factory=list)
    drifted: list[Drift] = field(default_factory=list)
    ahead: list[SeedUnit] = field(default_factory=list)
    blocked: list[SeedUnit] = field(default_factory=list)
    # Units whose requires_revision is not in the user's alembic history yet (issue 5).
    waiting: list[Waiting] = field(default_factory=list)
    # Units whose (name, version) row exists and is re-applied (on_change="rerun").
    reruns: set[str] = field(default_factory=set)
    checksums: dict[str, str] = field(default_factory=dict)

    def result(self, *, dry_run: bool = False) -> ApplyResult:
        return ApplyResult(skipped=list(self.skipped), pending=list(self.pending),
                           drifted=list(self.drifted), ahead=list(self.ahead),
                           waiting=list(self.waiting), dry_run=dry_run)


def plan(units: Sequence[SeedUnit], state: RowState[PlannedRow], checksums: Mapping[str, str], *,
         strict: bool = False, revisions: Callable[[SeedUnit], bool] | None = None) -> Plan:
    """Sort ``units`` (already in run order) into pending, skipped, drifted, ahead, blocked.

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
            continue
        behind = (next((waiting[dep] for dep in unit.after if dep in waiting), None)
                  if unit.after and waiting else None)
        if behind is not None and row is None:
            # Issue 5: a unit after one that waits for its schema waits too
            # (rather than failing on tables that do not exist yet).
            waiting[unit.name] = Waiting(unit.name, unit.version, behind.revision, unit,
                                         via=behind.via or behind.name)
            result.waiting.append(waiting[unit.name])
            continue
        if row is not None and row.status == "running":
            # A non-transactional unit was interrupted mid-way: its work may be
            # half done, so neither it nor anything after it may run until an
            # operator says which (`seedguard resolve`).
            result.blocked.append(unit)
            stopped.add(unit.name)
            continue
        if row is None:
            latest = state.latest(unit.name)
            if latest is not None and latest.version > unit.version:
                result.ahead.append(unit)
            elif unit.requires_revision and revisions is not None and not revisions(unit):
                # Issue 5: its schema is not there yet; report it, do not fail.
                waiting[unit.name] = Waiting(unit.name, unit.version, unit.requires_revision,
                                             unit)
                result.waiting.append(waiting[unit.name])
            else:
                result.pending.append(unit)
            continue
        if row.checksum and same_algorithm(row.checksum, checksum) and row.checksum != checksum:
            if unit.on_change == "rerun":
                # Re-applying on change is this unit's policy (data seeds by
                # default): pending work, not drift to warn about.
                result.pending.append(unit)
                result.reruns.add(unit.name)
                continue
            drift = Drift(unit.name, unit.version, row.checksum, checksum, unit)
            result.drifted.append(drift)
            if unit.on_change == "error":
                raise DriftError(drift.message(), drifted=[drift])
        result.skipped.append(unit)
    if strict and result.drifted:
        raise DriftError(
            "; ".join(d.message() for d in result.drifted) + " (strict mode refuses drift)",
            drifted=result.drifted,
        )
    return result


def run(
    engine: Engine,
    units: Sequence[SeedUnit],
    settings: Settings,
    *,
    dry_run: bool = False,
    strict: bool = False,
    listener: Listener | None = None,
    schema: bool = False,
) -> ApplyResult:
    """Apply the pending ``units`` (in the given order) to ``engine``.

    ``schema=True`` first runs the user's ``alembic upgrade head`` under the
    same locks (issue 5), so concurrent deploys never race alembic.
    """
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    checksums = {unit.name: unit.checksum() for unit in units}
    with connect(engine) as conn:
        # Where the database compares faster than Python, it does: then
        # "every unit applied and unchanged" needs no planning at all.
        compared = ledger.read_against(
            conn, [(unit.name, unit.version, checksums[unit.name]) for unit in units])
        if compared is not None and compared.all_applied and not schema:
            return ApplyResult(skipped=list(units), dry_run=dry_run)
        state: RowState[PlannedRow] | None = None
        if compared is not None and not compared.all_applied:
            state = compared.state
        else:  # another database, or schema=True (it takes the locks anyway)
            state = ledger.read(conn, full=False)
    # Reads the user's alembic graph only if a would-be-pending unit declares
    # requires_revision: the no-op start-up stays one query.
    gate = RevisionGate(settings, engine)
    first = plan(units, state or LedgerState(), checksums, strict=strict, revisions=gate)
    if dry_run:
        result = first.result(dry_run=True)
        _preview(engine, first.pending, result)
        return result
    # schema=True always takes the locks: the user's schema may be behind.
    if state is not None and not first.pending and not schema:
        _raise_blocked(first)
        return first.result()

    # Work to do: import what the units need now, not while holding the locks
    # (sqlalchemy.orm alone takes ~40 ms, paid by every waiting applier:
    # bench/contention.py). The no-op path above never pays it.
    import sqlalchemy.orm  # noqa: F401

    file_lock, db_lock, deadline = ledger_locks(engine, settings)
    settled: list[Plan] = []

    def already_done() -> bool:
        # Under the file lock, before the database lock: the process this one
        # waited for on this host has usually just applied everything. One
        # read ends the wait then, as safely as the lock-free fast path does;
        # otherwise the waiter would hold the file lock while it connected,
        # locked and re-read (bench/contention.py: most of a hand-over).
        if schema:
            return False
        with connect(engine) as check:
            now = ledger.read(check, full=False)
        if now is None:
            return False
        settled.append(plan(units, now, checksums, strict=strict, revisions=gate))
        return not settled[0].pending

    with both_locks(file_lock, db_lock, deadline, skip_if=already_done) as held:
        if not held:
            _raise_blocked(settled[0])
            return settled[0].result()
        with _work_connection(engine, db_lock) as conn:
            migrated = _upgrade_schema(settings, engine, conn, db_lock) if schema else []
            if db_lock.per_transaction:
                # No session lock behind a transaction pooler: create the ledger in
                # one transaction that holds the transaction-level lock (issue 6).
                with conn.begin():
                    db_lock.lock_unit(conn, Deadline(settings.lock_timeout))
                    ledger.ensure(conn, commit=False)
            else:
                ledger.ensure(conn)
            # Heads re-read under the locks: another applier (or our own
            # schema upgrade) may have moved them since the fast path.
            current = plan(units, ledger.read_current(conn), checksums, strict=strict,
                           revisions=gate.with_connection(conn))
            conn.commit()
            result = current.result()
            result.migrated = migrated
            for unit in current.pending:
                db_lock.verify()
                applied = _apply_one(conn, ledger, unit, current, listener, db_lock,
                                     settings.lock_timeout)
                if applied is None:
                    result.skipped.append(unit)
                else:
                    result.applied.append(applied)
                result.pending.remove(unit)
    _raise_blocked(current)
    return result


def _upgrade_schema(settings: Settings, engine: Engine, conn: Connection,
                    db_lock: DatabaseLock) -> list[str]:
    """The user's ``alembic upgrade head``, under the locks already held (issue 5)."""
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

    One connection per applier, not two (issue 6: 64 appliers against
    PostgreSQL's max_connections = 100). The lock survives the units' commits
    because it is session-level; the lock object closes the connection.
    """
    if db_lock.work_connection is not None:
        yield db_lock.work_connection
        return
    with connect(engine) as conn:
        yield conn


def _done_under_lock(conn: Connection, ledger: Ledger, unit: SeedUnit, checksum: str,
                     rerun: bool) -> bool:
    """Transaction lock mode: re-read the unit's row now that its lock is held.

    Nothing was locked between the plan and this transaction, so another
    applier may have applied the unit since; a "running" row means another
    applier is doing a non-transactional unit's work right now, or died doing it.
    """
    table = ledger.table
    row = conn.execute(table.select().where(table.c.name == unit.name,
                                            table.c.version == unit.version)).first()
    if row is None:
        return False
    if row.status == "running":
        raise UnitBlocked(
            f"unit {unit.name!r} v{unit.version} is being applied by another process, or "
            "was interrupted mid-way (it is non-transactional); run again once it has "
            f"finished, or if it was interrupted run `seedguard resolve {unit.name} "
            "--applied` or `--retry`",
            unit=unit,
        )
    return not rerun or row.checksum == checksum


def _apply_one(conn: Connection, ledger: Ledger, unit: SeedUnit, current: Plan,
               listener: Listener | None, db_lock: DatabaseLock | None = None,
               lock_timeout: float | None = None) -> Applied | None:
    """Apply one unit in its own transaction; None if another applier beat us to it."""
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    checksum = current.checksums[unit.name]
    rerun = unit.name in current.reruns
    if listener is not None:
        listener(UnitStarted(unit))
    log.info("applying %s v%d", unit.name, unit.version)
    started = time.perf_counter()
    if not unit.transactional:
        return _apply_non_transactional(conn, ledger, unit, checksum, rerun, listener, started,
                                        db_lock, lock_timeout)
    trans = conn.begin()
    in_work = False
    try:
        if db_lock is not None and db_lock.per_transaction:
            # Transaction lock mode: lock first, then re-check the ledger under it.
            db_lock.lock_unit(conn, Deadline(lock_timeout))
            if _done_under_lock(conn, ledger, unit, checksum, rerun):
                trans.rollback()
                log.info("unit %s v%d was applied by another process; skipped",
                         unit.name, unit.version)
                return None
        if not rerun:
            try:
                ledger.insert(conn, unit.name, unit.version, checksum,
                              description=unit.description)
            except IntegrityError:
                # Only reachable when both locks were bypassed (e.g. a lock path
                # per process and no database lock): the other applier's row won.
                trans.rollback()
                log.warning("unit %s v%d was applied concurrently by another process; skipped",
                            unit.name, unit.version)
                return None
        in_work = True
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session, \
                running(unit, listener):
            unit(session)
            session.commit()
        in_work = False
        duration_ms = _elapsed_ms(started)
        ledger.finish(conn, unit.name, unit.version, checksum=checksum, duration_ms=duration_ms)
        trans.commit()
    except BaseException as err:
        _rollback(trans)
        # Whatever the unit's own work raised (a DataError from a data seed
        # included) is that unit's failure; seedguard's own errors around it
        # (lock lost, blocked) pass through as they are.
        if isinstance(err, Exception) and (in_work or not isinstance(err, SeedguardError)):
            raise _failed(unit, err) from err
        raise
    return _finished(unit, duration_ms, listener)


def _apply_non_transactional(conn: Connection, ledger: Ledger, unit: SeedUnit, checksum: str,
                             rerun: bool, listener: Listener | None,
                             started: float, db_lock: DatabaseLock | None = None,
                             lock_timeout: float | None = None) -> Applied | None:
    """Record "running", commit, do the work, then record "applied".

    If the process dies in between, the "running" row stays and blocks the unit
    until an operator resolves it: the work may be half done.
    """
    from sqlalchemy.orm import Session
    with conn.begin():
        if db_lock is not None and db_lock.per_transaction:
            # Transaction lock mode: the "running" row is what other appliers
            # see while the work runs, unlocked, outside any transaction.
            db_lock.lock_unit(conn, Deadline(lock_timeout))
            if _done_under_lock(conn, ledger, unit, checksum, rerun):
                return None
        if rerun:
            ledger.finish(conn, unit.name, unit.version, checksum=checksum, duration_ms=0,
                          status="running")
        else:
            ledger.insert(conn, unit.name, unit.version, checksum, status="running",
                          description=unit.description)
    try:
        with Session(bind=conn) as session, running(unit, listener):
            unit(session)
            session.commit()
    except Exception as err:
        _rollback(conn.get_transaction())
        raise _failed(unit, err, partial=True) from err
    with conn.begin():
        ledger.finish(conn, unit.name, unit.version, checksum=checksum,
                      duration_ms=_elapsed_ms(started))
    return _finished(unit, _elapsed_ms(started), listener)


def _finished(unit: SeedUnit, duration_ms: int, listener: Listener | None) -> Applied:
    log.info("applied %s v%d in %d ms", unit.name, unit.version, duration_ms)
    if listener is not None:
        listener(UnitFinished(unit, duration_ms))
    return Applied(unit.name, unit.version, duration_ms, unit)


def _failed(unit: SeedUnit, err: Exception, *, partial: bool = False) -> SeedFailed:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    what = (
        "it is non-transactional and may be half done; inspect it, then run "
        f"`seedguard resolve {unit.name} --applied` or `--retry`"
        if partial
        else "its work and ledger row were rolled back; units before it stay applied. "
        "Fix it and run again"
    )
    return SeedFailed(
        f"unit {unit.name!r} v{unit.version} failed: {type(err).__name__}: {detail}; {what}",
        unit=unit,
    )


def _preview(engine: Engine, pending: Sequence[SeedUnit], result: ApplyResult) -> None:
    """Ask pending units with a preview hook what they would do (issue 4: data seeds).

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
        raise UnitBlocked(
            f"unit {unit.name!r} v{unit.version} was interrupted mid-way (it is "
            "non-transactional) and blocks the units that depend on it; check its work, then "
            f"run `seedguard resolve {unit.name} --applied` or `seedguard resolve "
            f"{unit.name} --retry`",
            unit=unit,
        )


def _rollback(trans: Transaction | None) -> None:
    # The connection may be gone (killed server-side); the server rolls back then.
    if trans is None:
        return
    try:
        trans.rollback()
    except Exception as err:
        log.debug("rollback failed (connection lost?): %s", type(err).__name__)


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
