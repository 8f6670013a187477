"""One run against one target: its identity, locks, connection, guard and mode on one object.

Modelled on alembic's ``MigrationContext`` (``runtime/migration.py``): the
connection, the mode and the recorder live on the context, and the loop
(:meth:`RunContext.run_units`) is written once. Each unit goes through the
same steps, "begin, claim, work, verify, finish, end"; what differs between
applying a unit in one transaction, applying a ``transactional=False`` unit
step by step, and rehearsing a unit (``seedguard.plan()``: its transaction
always rolled back) is a :class:`UnitStep` subclass, chosen per unit by the
run's :class:`Mode`. The lock mode is the database lock's own strategy:
``lock_mode="transaction"`` takes a transaction-level lock in each
transaction that writes the ledger (:meth:`DatabaseLock.lock_unit`, a no-op
for the session locks), and :func:`locked_transaction` is the one place the
work outside units (the ledger's own schema, the user's ``alembic upgrade``,
``stamp``/``forget``/``resolve``) is put under it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from seedguard.eventloop import call_unit, is_async_unit
from seedguard.events import LockAcquired, LockWaiting, Run, UnitStarted, running, unit_context
from seedguard.ledger import Ledger
from seedguard.sessionclass import UnitClasses, classes_for
from seedguard.sessions import app_sessions, unit_session
from seedguard.verify import check_outcome, restore_session, seedguard_code, user_code, watch

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.config import Settings
    from seedguard.guard import EngineGuard, _Scope
    from seedguard.locks import DatabaseLock, Deadline, FileLock
    from seedguard.planning import Plan
    from seedguard.result import Applied
    from seedguard.unit import SeedUnit


class UnitStep:
    """How one unit's transaction begins and ends; the procedure around it is the loop's.

    A subclass makes one attempt at each step, as a filelock backend's
    ``_acquire`` does; :meth:`RunContext.run_unit` owns the order, the
    guard, the session and the error handling.
    """

    transactional: ClassVar[bool] = True
    """Whether the unit's work runs in one transaction that the guard keeps whole."""

    journaled: ClassVar[bool] = False
    """Whether a data seed's writes are journaled (for ``seedguard downgrade``): only
    when applied in one transaction, which the journal then commits with."""

    def __init__(self, ctx: RunContext, unit: SeedUnit, current: Plan | None,
                 scope: _Scope, started: float) -> None:
        self.ctx = ctx
        self.conn = ctx.connection
        self.unit = unit
        self.scope = scope
        self.started = started
        self.checksum = current.checksums[unit.name] if current is not None else ""
        self.replaces = current.replaces.get(unit.name) if current is not None else None
        self.claimed = False

    def recording(self) -> AbstractContextManager[Any]:
        """Entered around every step of the unit (a rehearsal records its statements)."""
        return nullcontext()

    def begin(self) -> bool:
        """Begin the unit's transaction and claim it; False if another applier won it."""
        raise NotImplementedError

    def finish(self, outcome: Any) -> None:
        """After the work: verify it, record it, end the transaction."""
        raise NotImplementedError

    def fail(self, err: BaseException, *, in_work: bool) -> BaseException | None:
        """After a failure anywhere in the unit: what to raise (``err`` itself, or
        what it is raised as), or None when the run goes on without the unit."""
        return err

    def close(self) -> None:
        """Always, last: undo session changes that would end the next unit's transaction."""
        restore_session(self.conn)

    def done(self) -> Applied | None:
        """After the transaction ended well: what the run reports for the unit."""
        return None

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class Mode:
    """What a run does with each unit: which step it takes, whether it runs at all.

    :meth:`RunContext.run_units` asks it per unit; a rehearsal is one mode, an
    apply another, as alembic's offline ``--sql`` mode swaps the connection,
    not the loop.
    """

    def step_for(self, unit: SeedUnit) -> type[UnitStep]:
        raise NotImplementedError

    def runs(self, ctx: RunContext, unit: SeedUnit) -> bool:
        """Before each unit: whether to run it (else it is left out of this run)."""
        return True

    def units(self, ctx: RunContext) -> AbstractContextManager[Any]:
        """Entered around all of the run's units."""
        return nullcontext()


class RunContext:
    """One run against one target connection.

    The target's identity (engine, ledger name and schema, lock key, bind
    key), its locks, the connection units run on, the guard on what a unit
    may do, the listener and the mode: what every step of the loop needs.

    :param engine: the engine the units run on.
    :param settings: the resolved settings (ledger table and schema, lock
        path, mode and timeout, lease).
    :param mode: apply or rehearse (:class:`Mode`).
    :param emit: the run's event sender; None sends no unit or lock events
        (a rehearsal's units are not runs of them).
    :param scoped_sessions: the user's ``scoped_session`` objects that return
        each unit's session while it runs.
    :param session_class: the session class of units whose annotation names none.
    :param bind_key: the Flask-SQLAlchemy bind this target is (None: the default).
    """

    def __init__(self, engine: Engine, settings: Settings, mode: Mode, *,
                 emit: Run | None = None,
                 scoped_sessions: Sequence[scoped_session[Any]] = (),
                 session_class: type[Any] | None = None,
                 bind_key: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.mode = mode
        self.emit = emit
        self.session_class = session_class
        self.bind_key = bind_key
        self.ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
        self.scoped_sessions = list(scoped_sessions)
        self._locks: tuple[FileLock, DatabaseLock, Deadline] | None = None
        self._conn: Connection | None = None
        self._guard: EngineGuard | None = None

    @functools.cached_property
    def registries(self) -> list[scoped_session[Any]]:
        """What returns the unit's session while it runs: the user's ``scoped_session``
        objects and the Flask app's ``db.session`` (looked up once, when a unit runs)."""
        return [*self.scoped_sessions, *app_sessions(self.engine)]

    # -- identity and locks --------------------------------------------------------------

    def _made_locks(self) -> tuple[FileLock, DatabaseLock, Deadline]:
        # Made when first asked for, not with the context: the lock-free fast
        # path never needs them, nor imports seedguard.locks.
        if self._locks is None:
            from seedguard.locks import ledger_locks

            self._locks = ledger_locks(self.engine, self.settings)
        return self._locks

    @property
    def file_lock(self) -> FileLock:
        return self._made_locks()[0]

    @property
    def db_lock(self) -> DatabaseLock:
        return self._made_locks()[1]

    @property
    def lock_key(self) -> str:
        """The database lock's key (the ledger's schema and table)."""
        return self.db_lock.key

    def unit_deadline(self) -> Deadline:
        """A fresh ``lock_timeout`` for a transaction-level lock (one per transaction)."""
        from seedguard.locks import Deadline

        return Deadline(self.settings.lock_timeout)

    @property
    def connection(self) -> Connection:
        """The connection units run on, while the locks are held (:meth:`held`)."""
        if self._conn is None:
            raise RuntimeError("the run context holds no connection outside held()")
        return self._conn

    @property
    def guard(self) -> EngineGuard:
        if self._guard is None:
            raise RuntimeError("the run context has no guard outside held()")
        return self._guard

    @contextlib.contextmanager
    def held(self, *, skip_if: Callable[[], bool] | None = None) -> Iterator[bool]:
        """Hold both locks with the connection units run on and the guard on the engine.

        Yields False, holding nothing, when ``skip_if`` (see
        :func:`seedguard.locks.both_locks`) says there is nothing to do.
        """
        from seedguard.guard import EngineGuard
        from seedguard.locks import both_locks

        file_lock, db_lock, deadline = self._made_locks()
        emit = self.emit if self.emit is not None and not self.emit.quiet else None
        if emit is not None:
            emit(LockWaiting(emit.id, str(file_lock.path), self.settings.lock_timeout))
        waiting_since = time.perf_counter()
        with seedguard_code(), both_locks(file_lock, db_lock, deadline, skip_if=skip_if) as held:
            if emit is not None:
                emit(LockAcquired(emit.id, time.perf_counter() - waiting_since))
            if not held:
                yield False
                return
            with work_connection(self.engine, db_lock) as conn, EngineGuard(self.engine) as guard:
                self._conn, self._guard = conn, guard
                try:
                    yield True
                finally:
                    self._conn = self._guard = None

    def locked(self) -> AbstractContextManager[bool]:
        """Ledger work outside units, under the database lock: :func:`locked_transaction`."""
        return locked_transaction(self.connection, self.db_lock, self.unit_deadline())

    # -- the loop ------------------------------------------------------------------------

    def run_units(self, units: Sequence[SeedUnit], current: Plan | None = None
                  ) -> Iterator[tuple[SeedUnit, Applied | None]]:
        """Run ``units`` in order, each through :meth:`run_unit`; yields what each gave.

        An error that stops the run propagates; a unit its mode leaves out is
        not yielded.
        """
        with unit_transactions(self.connection), self.mode.units(self):
            for unit in units:
                if not self.mode.runs(self, unit):
                    continue
                with unit_context(unit):
                    yield unit, self.run_unit(unit, current)

    def run_unit(self, unit: SeedUnit, current: Plan | None) -> Applied | None:
        """Begin, claim, work, verify, finish, end: one unit, whatever the mode.

        Its events start once its ledger row is claimed: a unit that another
        applier won is not one that ran here.
        """
        # Before anything runs: an annotation that cannot work is a DefinitionError.
        classes = classes_for(unit.fn, is_async_unit(unit), self.session_class)
        started = time.perf_counter()
        step_class = self.mode.step_for(unit)
        conn = self.connection
        with self.guard.unit(conn, unit, transactional=step_class.transactional) as scope, \
                watch(scope):
            step = step_class(self, unit, current, scope, started)
            with step.recording():
                in_work = False
                try:
                    if not step.begin():
                        return None
                    if self.emit is not None:
                        self.emit(UnitStarted(unit, self.emit.id))
                    in_work = True
                    outcome = self._work(unit, scope, classes, step.transactional,
                                         step.checksum if step.journaled else None)
                    in_work = False
                    step.finish(outcome)
                except BaseException as err:
                    raised = step.fail(err, in_work=in_work)
                    if raised is None:
                        return None
                    if raised is err:
                        raise
                    raise raised from err
                finally:
                    step.close()
        return step.done()

    def _work(self, unit: SeedUnit, scope: _Scope, classes: UnitClasses,
              transactional: bool, journal_checksum: str | None = None) -> Any:
        """The unit's own function, on a session of the unit's connection; with
        ``journal_checksum``, a data seed journals its writes under it."""
        from seedguard import journal

        recording: AbstractContextManager[Any] = contextlib.nullcontext() \
            if journal_checksum is None else journal.recording(self.ledger, unit,
                                                               journal_checksum)
        with unit_session(self.connection, self.registries, transactional=transactional,
                          session_class=classes.sync) as session, running(unit, self.emit), \
                recording:
            with user_code():
                outcome = call_unit(unit, session, async_class=classes.asynchronous)
                check_outcome(unit, outcome)
            # Flush what the unit left pending: its writes, not a commit of the unit.
            session.commit()
        if scope.refused is not None:
            raise scope.refused  # the unit caught the refusal and went on
        return outcome


@contextlib.contextmanager
def locked_transaction(conn: Connection, db_lock: DatabaseLock, deadline: Deadline
                       ) -> Iterator[bool]:
    """Ledger work outside units, under the database lock in either lock mode; commits it.

    Yields whether the work may commit as it goes. A session lock
    (``lock_mode="session"``) outlives commits: it may, and what is left is
    committed at the end. A transaction-level lock (``"transaction"``, behind
    PgBouncer) ends with the transaction that took it, and no session lock
    is held: the work runs in one transaction that takes the lock first and
    must not commit on its own. On an error nothing left uncommitted is
    committed.
    """
    if db_lock.per_transaction:
        with conn.begin():
            db_lock.lock_unit(conn, deadline)
            yield False
        return
    yield True
    conn.commit()


@contextlib.contextmanager
def work_connection(engine: Engine, db_lock: DatabaseLock) -> Iterator[Connection]:
    """The connection units run on: the lock's own session when it has one.

    One connection per applier, not two (64 appliers against
    PostgreSQL's max_connections = 100). The lock survives the units' commits
    because it is session-level; the lock object closes the connection.
    """
    if db_lock.work_connection is not None:
        yield db_lock.work_connection
        return
    from seedguard.connect import connect

    with connect(engine) as conn:
        yield conn


@contextlib.contextmanager
def unit_transactions(conn: Connection) -> Iterator[None]:
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


def root_error(err: BaseException) -> str:
    """``Type: first line`` of the driver's own error where there is one.

    SQLAlchemy's wrapper puts its own notes first (for example "raised as a
    result of Query-invoked autoflush"), which hide the cause.
    """
    root = getattr(err, "orig", None) or err
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__
