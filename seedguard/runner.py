"""The apply loop: fast path, locks, re-read, one transaction per unit.

1. Fast path, no lock: read the ledger once; if nothing selected is pending
   (and the ledger is current), return. A start-up with nothing to do costs
   one query.
2. File lock, then database lock, both bounded by one deadline.
3. Re-read the ledger under the locks: another applier may have finished
   while we waited. The read gives the ledger's revision too; only a ledger
   that is missing or behind is created or upgraded, then read again.
4. Each pending unit in its own transaction: its ledger row is claimed first,
   as "running" (the primary key, or for a re-applied unit a conditional
   update that row-locks it, makes a second applier that bypassed both locks
   stop here, before any work), then its work runs through a Session joined
   with a SAVEPOINT (which the app's own sessions are made to be: see
   :mod:`seedguard.sessions`), then the row becomes "applied" in the same
   transaction. Nothing may end that transaction early or write around it
   (:mod:`seedguard.guard`). A failure rolls back the unit's work and its row
   together.

The loop itself is :meth:`seedguard.context.RunContext.run_units`; this
module is the apply mode of it (:class:`Applying`: :class:`_Atomic` for a
unit in one transaction, :class:`_Stepwise` for ``transactional=False``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from seedguard.alembic import RevisionGate, upgrade_head
from seedguard.connect import connect
from seedguard.context import Mode, RunContext, UnitStep, root_error
from seedguard.dialects import applicable
from seedguard.errors import SeedFailed, SeedguardError, UnitBlocked, resolve_advice
from seedguard.events import (
    Listener,
    Run,
    RunFinished,
    RunStarted,
    UnitFailed,
    UnitFinished,
)
from seedguard.guard import current_unit, ending
from seedguard.ledger import Comparison, LedgerState
from seedguard.notify import notify_applied
from seedguard.planning import Plan, expected, look, plan
from seedguard.result import Applied, ApplyResult
from seedguard.unit import SeedUnit
from seedguard.verify import Canary, limit_hint, translate_session_errors, unit_running_on

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.config import Settings
    from seedguard.guard import _Scope
    from seedguard.review import Plan as ReviewedPlan

# Plan and plan: seedguard.planning's, imported from here too.
__all__ = ["Plan", "looked_already", "plan", "run"]

log = logging.getLogger(__name__)


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
    bind_key: str | None = None,
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
    ``bind_key`` is the Flask-SQLAlchemy bind ``engine`` is (:mod:`seedguard.binds`),
    kept on the run's context (None: the default database).
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
            ctx = RunContext(engine, settings, APPLYING, emit=emit,
                             scoped_sessions=scoped_sessions, session_class=session_class,
                             bind_key=bind_key)
            result = _run(ctx, units, dry_run=dry_run, strict=strict, schema=schema,
                          reviewed=reviewed)
        except BaseException as err:
            if not emit.quiet:
                emit(RunFinished(emit.id, emit.elapsed_ms(), error=err))
            raise
        if not emit.quiet:
            emit(RunFinished(emit.id, emit.elapsed_ms(), result=result))
        return result


def _run(ctx: RunContext, units: Sequence[SeedUnit], *, dry_run: bool, strict: bool,
         schema: bool, reviewed: ReviewedPlan | None) -> ApplyResult:
    _not_reentrant(ctx.engine)
    # A unit limited to other databases is not applicable here: left out, and
    # the units after it run without it (seedguard.dialects).
    planner = _Planner(ctx, applicable(units, ctx.engine), strict=strict)
    # The caller has just looked and found work (apply_each's first pass):
    # no lock-free look again, before or after the file lock; the re-read
    # under both locks decides, as it always does. A dry run only looks.
    looked = _LOOKED.get() and not dry_run
    # A reviewed plan is checked under the locks: "nothing pending" is an
    # answer to check against it too (applied by someone else since?).
    planner.fast = not schema and reviewed is None and not looked
    if not looked:
        now = planner.look()
        if now is not None and now.all_applied and planner.fast:
            return ApplyResult(skipped=list(planner.units), dry_run=dry_run)
        first = planner.planned(now)
        if dry_run:
            result = first.result(dry_run=True)
            _preview(ctx.engine, first.pending, result)
            return result
        # schema=True always takes the locks: the user's schema may be behind.
        # A "running" row is no reason to fail without them: its owner is
        # most likely still at work (a gunicorn worker that started a moment
        # earlier), and the locks make this applier wait for it and look again.
        if now is not None and not first.pending and not first.blocked and planner.fast:
            return first.result()

    # Work to do: import what the units need now, not while holding the locks
    # (sqlalchemy.orm alone takes ~40 ms, paid by every waiting applier:
    # bench/contention.py). The no-op path above never pays it.
    import sqlalchemy.orm  # noqa: F401

    elsewhere = unit_running_on(ctx.engine)
    if elsewhere is not None:
        # This process holds the locks for that unit: waiting would never end.
        raise SeedguardError(
            f"seedguard.apply() was called while unit {elsewhere.name!r} is being applied "
            "to the same database by this process (from a thread the unit started?); "
            "apply() is not re-entrant: do the work in the unit with its session, or "
            "declare it as a unit of its own (after=...)"
        )
    with ctx.held(skip_if=planner.already_done) as held:
        if not held:
            assert planner.settled is not None
            return planner.settled.result()
        current, result = _under_locks(ctx, planner, schema=schema, reviewed=reviewed)
        for unit, applied in ctx.run_units(list(current.pending), current):
            if applied is None:
                result.skipped.append(unit)
            else:
                result.applied.append(applied)
            result.pending.remove(unit)
    _raise_blocked(current)
    return result


_LOOKED: ContextVar[bool] = ContextVar("seedguard_looked_already", default=False)


@contextlib.contextmanager
def looked_already() -> Iterator[None]:
    """Within it, :func:`run` skips its lock-free looks and goes straight to the locks.

    For a caller that has just read the target's ledger, without a lock, and
    found work to do (``apply_each``'s first pass reads a batch of schemas in
    one statement): looking again before and after the file lock would only
    repeat that read. Nothing rests on it: under both locks the ledger is
    read again and that read decides what runs. A dry run looks all the same
    (its answer is the look).
    """
    token = _LOOKED.set(True)
    try:
        yield
    finally:
        _LOOKED.reset(token)


def _not_reentrant(engine: Engine) -> None:
    running_unit = current_unit()
    if running_unit is not None:
        # Its own file lock is held by this very process: waiting would never end.
        raise SeedguardError(
            f"seedguard.apply() was called inside unit {running_unit.name!r}, which is "
            "itself being applied; apply() is not re-entrant: do the work in the unit "
            "with its session, or declare it as a unit of its own (after=...)"
        )


class _Planner:
    """What one apply() call plans from: its units, their checksums, the ledger's rows.

    The fast path, the look just after the file lock and the re-read under
    both locks all plan by the one rule (:func:`seedguard.planning.plan`).
    """

    def __init__(self, ctx: RunContext, units: Sequence[SeedUnit], *, strict: bool) -> None:
        self.ctx = ctx
        self.units = units
        self.strict = strict
        self.fast = True
        self.checksums, self.rows = expected(units)
        # Reads the user's alembic graph only if a would-be-pending unit declares
        # requires_revision: the no-op start-up stays one query.
        self.gate = RevisionGate(ctx.settings, ctx.engine)
        # What the look after the file lock found, when it found nothing to do.
        self.settled: Plan | None = None

    def look(self) -> Comparison | None:
        return look(self.ctx.engine, self.ctx.ledger, self.rows)

    def planned(self, seen: Comparison | None) -> Plan:
        if seen is not None and seen.all_applied:
            return Plan(skipped=list(self.units), checksums=dict(self.checksums))
        state = seen.state if seen is not None else LedgerState()
        return plan(self.units, state, self.checksums, strict=self.strict, revisions=self.gate)

    def already_done(self) -> bool:
        """Once the file lock is had (or, after a wait, just after it): the
        applier this one waited for, or one that finished a moment before,
        has usually done everything. One look ends it then, as safely as
        the lock-free fast path does, without the database lock, the ledger
        check and the full re-read (bench/contention.py)."""
        if not self.fast:
            return False
        seen = self.look()
        if seen is None:
            return False
        settled = self.planned(seen)
        if settled.pending or settled.blocked:
            return False
        self.settled = settled
        return True


def _under_locks(ctx: RunContext, planner: _Planner, *, schema: bool,
                 reviewed: ReviewedPlan | None) -> tuple[Plan, ApplyResult]:
    """The user's schema, then the ledger's, then the plan from the ledger re-read."""
    conn, ledger, units, checksums = ctx.connection, ctx.ledger, planner.units, planner.checksums
    migrated: list[str] = []
    if schema:
        with ctx.locked() as commit:
            migrated = upgrade_head(ctx.settings, ctx.engine, conn, commit=commit)
    # Heads re-read under the locks: another applier (or our own schema
    # upgrade) may have moved them since the fast path. The read also says
    # whether the ledger is at HEAD_REVISION (it joins the version table), so
    # a current ledger costs this one statement; a missing or behind one
    # (None) is created or upgraded first, then read again. A newer one
    # raises here, as ensure() would.
    state = ledger.read(conn)
    if state is None:
        with ctx.locked() as commit:
            ledger.ensure(conn, commit=commit)
        state = ledger.read_current(conn)
    current = plan(units, state, checksums, strict=planner.strict,
                   revisions=planner.gate.with_connection(conn))
    conn.commit()
    if reviewed is not None:
        from seedguard.review import check_reviewed, ledger_rows

        check_reviewed(reviewed, [(unit.name, unit.version, checksums[unit.name])
                                  for unit in current.pending],
                       ctx.settings.contexts, ledger_rows(state, units))
    result = current.result()
    result.migrated = migrated
    return current, result


# -- the apply mode: one step class per kind of unit -----------------------------------------


class Applying(Mode):
    """Apply each unit: in one transaction, or step by step when ``transactional=False``."""

    def step_for(self, unit: SeedUnit) -> type[UnitStep]:
        return _Atomic if unit.transactional else _Stepwise

    def runs(self, ctx: RunContext, unit: SeedUnit) -> bool:
        # Never a unit without the lock: a lost lease stops the run here.
        ctx.db_lock.verify()
        return True


APPLYING = Applying()


class _Claiming(UnitStep):
    """A unit that is applied: its ledger row claimed first, under the unit's lock."""

    journaled = True  # applied in one transaction: a data seed journals its writes

    duration_ms = 0

    def claim(self) -> bool:
        log.info("applying %s v%d", self.unit.name, self.unit.version)
        # Transaction lock mode: the lock first, then the claim re-checks under it.
        self.ctx.db_lock.lock_unit(self.conn, self.ctx.unit_deadline())
        self.claimed = self._claim_row()
        return self.claimed

    def record(self) -> None:
        """The unit's row, "applied" with its duration; committed with the unit, a
        waiter LISTENing (seedguard.readiness) hears it when the unit's work
        becomes visible, not before."""
        self.ctx.ledger.finish(self.conn, self.unit.name, self.unit.version,
                               checksum=self.checksum, duration_ms=self.duration_ms)
        notify_applied(self.conn, self.ctx.ledger)

    def failed(self, outcome: BaseException) -> None:
        if self.ctx.emit is not None:
            self.ctx.emit(UnitFailed(self.unit, self.elapsed_ms(), outcome, self.ctx.emit.id))

    def done(self) -> Applied:
        return _finished(self.unit, self.duration_ms, self.ctx.emit)

    def _claim_row(self) -> bool:
        """Claim the unit's ledger row in the open transaction; False if another applier won.

        A failed claim is a lost race only when a re-read shows that another
        applier's row is there; anything else (a trigger or CHECK on the ledger,
        an extra NOT NULL column, names that one collation calls equal) fails
        the run, so no unit is ever skipped on a misread error.
        """
        from sqlalchemy.exc import IntegrityError

        conn, ledger, unit, scope = self.conn, self.ctx.ledger, self.unit, self.scope
        checksum, replaces = self.checksum, self.replaces

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
                f"({root_error(refusal)}) and no other applier's row explains it; check the "
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

    def claim_committed(self) -> bool:
        """Whether the unit's "running" claim is committed (True also when it cannot be read)."""
        try:
            with ending(self.scope):
                row = self.ctx.ledger.row(self.conn, self.unit.name, self.unit.version)
                self.conn.rollback()
        except Exception as err:
            log.debug("cannot read the ledger row after a lost connection: %s", root_error(err))
            return True
        return row is not None and row.status == "running"

    def mark_dirty(self) -> bool:
        """Record that a failed unit's transaction was ended mid-way: part of it may be
        committed, its "running" row among it. Whether the row now says "dirty"."""
        conn, unit, scope = self.conn, self.unit, self.scope
        try:
            with ending(scope), conn.begin():
                self.ctx.ledger.finish(conn, unit.name, unit.version, checksum=self.checksum,
                                       duration_ms=self.elapsed_ms(), status="dirty")
        except Exception as err:
            log.warning("unit %s v%d: could not mark its ledger row dirty (%s); it stays "
                        "'running', which blocks it the same way", unit.name, unit.version,
                        root_error(err))
            with contextlib.suppress(Exception), ending(scope):
                conn.rollback()
            return False
        return True


class _Atomic(_Claiming):
    """The unit's work and its ledger row in one transaction, verified whole."""

    canary: Canary | None = None
    atomic = True

    def begin(self) -> bool:
        self.trans = self.conn.begin()
        if not self.claim():
            return False
        self.canary = Canary(self.conn)
        self.canary.plant()
        return True

    def finish(self, outcome: Any) -> None:
        assert self.canary is not None
        self.atomic = self.canary.intact()
        self.canary.back_home()
        self.duration_ms = self.elapsed_ms()
        self.record()
        with ending(self.scope):
            self.trans.commit()

    def fail(self, err: BaseException, *, in_work: bool) -> BaseException:
        conn, unit, scope, canary = self.conn, self.unit, self.scope, self.canary
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
                intact = not self.claim_committed()
            canary.back_home_after_rollback()
        dirty = rolled_back and not intact
        if dirty:
            self.mark_dirty()
        if isinstance(err, Exception) and scope.refused is not None:
            # What the guard refused is the cause; the unit's own error
            # may only be a consequence of it.
            err = scope.refused
        outcome = _outcome(unit, err, in_work=in_work or not intact,
                           rolled_back=rolled_back and intact, dirty=dirty)
        if self.claimed:
            self.failed(outcome)
        return outcome

    def done(self) -> Applied:
        if not self.atomic:
            log.warning("unit %s v%d was not atomic: it ended its own transaction mid-way (a "
                        "COMMIT, an implicit commit or a raw DB-API commit), so its work was "
                        "committed in parts; it succeeded and is recorded applied. Use "
                        "session.commit() (a savepoint) instead, or declare it "
                        "transactional=False", self.unit.name, self.unit.version)
        return super().done()


class _Stepwise(_Claiming):
    """Record "running", commit, do the work, then record "applied".

    If the process dies in between, the "running" row stays and blocks the unit
    until an operator resolves it: the work may be half done.
    """

    journaled = False  # no one transaction for the journal to commit with

    transactional = False

    def begin(self) -> bool:
        # Transaction lock mode: the "running" row is what other appliers
        # see while the work runs, unlocked, outside any transaction.
        with self.conn.begin():
            return self.claim()

    def finish(self, outcome: Any) -> None:
        with self.conn.begin():
            self.duration_ms = self.elapsed_ms()
            self.record()

    def fail(self, err: BaseException, *, in_work: bool) -> BaseException:
        if not in_work:
            return err  # the claim or the record: seedguard's own, as it was raised
        _abort(self.conn, self.scope)
        outcome = _outcome(self.unit, err, in_work=True, rolled_back=False, partial=True)
        self.failed(outcome)
        return outcome

    def close(self) -> None:
        """Nothing to undo: its work ran outside any transaction of seedguard's."""


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


def _finished(unit: SeedUnit, duration_ms: int, emit: Run | None) -> Applied:
    log.info("applied %s v%d in %d ms", unit.name, unit.version, duration_ms)
    if emit is not None:
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
        detail = root_error(err)
    hint = limit_hint(err)
    if "database is locked" in detail:
        hint = ("; most likely another connection holds SQLite's write lock: a session or "
                "engine other than the unit's in this process (write through "
                "the session argument, db.session, or apply(scoped_sessions=...)), or "
                "another process writing to the same file")
    return SeedFailed(
        f"unit {unit.name!r} v{unit.version} failed: {detail}{hint}; {what}",
        unit=unit, rolled_back=rolled_back and not partial and not dirty,
    )


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
