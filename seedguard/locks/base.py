"""What every database lock does, and the registries that pick one class per dialect.

A database lock guards one ledger, and its key is the ledger as the server
knows it (database, schema, table), read on the lock's own connection when
the lock is taken: two appliers configured with different spellings of one
ledger (an explicit schema on one host and the default on another, a database
named in the URL or implied by the user name) meet on the same lock.

:class:`DatabaseLock` owns the procedure, as filelock's ``acquire`` owns
timeout and bookkeeping around a backend's ``_acquire``: the dedicated
connection, the wait in stretches under one :class:`Deadline`, the take-over
of a holder whose lease ran out, the timeout that names the holder, and never
a locked session left in the pool. A backend (``postgresql``, ``mysql``)
supplies its SQL: one attempt (:meth:`DatabaseLock._try_acquire`), the
unlock, and its session's settings.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, overload

from seedguard.bydialect import ByDialect, Registry
from seedguard.config import DEFAULT_LEASE
from seedguard.errors import ConfigError, LockTimeout, SeedguardError
from seedguard.locks.deadline import Deadline

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from seedguard.locks.lease import Heartbeat, Timings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerKey:
    """The ledger a database lock guards, as configured; the server says where it lives.

    ``schema`` is the explicit ``ledger_schema`` or None for the connection's
    default (PostgreSQL's search path, MySQL's current database).
    """

    table: str
    schema: str | None = None


LockKey = str | LedgerKey
"""A lock's key: a LedgerKey the lock resolves on the server, or a key string used as is."""


# Each backend module registers its class by defining it; seedguard.locks
# imports them all.
DATABASE_LOCKS: Registry[DatabaseLock] = Registry("database lock")
"""The session-level lock class of each dialect (``lock_mode="session"``, the default)."""

TRANSACTION_LOCKS: Registry[DatabaseLock] = Registry("transaction-level database lock")
"""``lock_mode="transaction"``: only PostgreSQL has transaction-scoped advisory locks."""


class DatabaseLock(ByDialect):
    """A lock held by one database session, chosen by dialect from ``DATABASE_LOCKS``.

    ``acquire`` opens a dedicated connection and takes the lock there; the
    server drops it if this process dies. ``verify`` is called before each
    unit so a lost lock connection stops the run instead of leaving it
    unprotected. A subclass that sets ``registry = TRANSACTION_LOCKS`` is a
    ``lock_mode="transaction"`` lock.
    """

    registry = DATABASE_LOCKS
    # True for a lock taken per unit transaction (lock_unit) rather than per run.
    per_transaction: ClassVar[bool] = False
    # Whether the dialect's lock has a lease (a heartbeat, keepalives): not SQLite.
    leased: ClassVar[bool] = False
    # The lease's SQL, per dialect: the server's UTC clock, and a heartbeat's age
    # in seconds by it (the database is the only clock the appliers share).
    utc_now_sql: ClassVar[str] = "CURRENT_TIMESTAMP"
    # The connect argument each driver takes for a connect timeout in seconds.
    connect_timeout_args: ClassVar[dict[str, str]] = {}

    def __init__(self, engine: Engine, key: LockKey, *, lease: float = DEFAULT_LEASE) -> None:
        self.engine = engine
        self.ledger = key if isinstance(key, LedgerKey) else None
        self._key = key if isinstance(key, str) else None
        self.conn: Connection | None = None
        self.lease = lease
        self._heartbeat: Heartbeat | None = None
        self._saved_socket: list[tuple[int, int, int]] = []
        self._connect_listener: Any = None

    @property
    def key(self) -> str:
        """The key as the server identifies the ledger (``database.schema.table``).

        Known once the lock was taken (it is read on the lock's own
        connection); asked for before that, it costs a connection of its own.
        """
        if self._key is None:
            from seedguard.connect import connect

            with connect(self.engine) as conn:
                self.resolve(conn)
        assert self._key is not None
        return self._key

    def resolve(self, conn: Connection) -> str:
        """The key, read on ``conn`` from the server if it is not known yet."""
        if self._key is None:
            assert self.ledger is not None
            self._key = self.server_key(conn, self.ledger)
        return self._key

    def server_key(self, conn: Connection, ledger: LedgerKey) -> str:
        """The key of ``ledger`` as the server behind ``conn`` names it; per dialect."""
        return f".{ledger.schema or ''}.{ledger.table}"

    def acquire(self, deadline: Deadline) -> None:
        """Take the lock on a connection of its own, waiting at most ``deadline``.

        The wait goes in stretches of :meth:`_try_acquire` (:meth:`_slice`):
        between two, a holder whose lease ran out has its session ended
        (:mod:`seedguard.locks.lease`), and the next stretch takes the lock.
        Ends in :class:`LockTimeout` naming the holder when the deadline
        passes or the server cancels the wait. Whatever fails on the way, a
        session that got the lock is unlocked (or ended), never pooled.
        """
        from sqlalchemy.exc import DBAPIError

        from seedguard.connect import connection_errors

        with connection_errors(self.engine):
            conn = self.engine.connect()
        locked = False
        try:
            try:
                self._open_session(conn)
            except DBAPIError as err:
                # A server or proxy that refuses a setting: the wait works
                # without it, the session is then only as long-lived as the
                # role's limits let it be.
                log.info("could not prepare the database lock's session (%s); waiting "
                         "without it", str(err.orig).strip().splitlines()[0] if str(err.orig)
                         else type(err.orig).__name__)
                conn.rollback()
            while not locked:
                try:
                    locked = self._try_acquire(conn, self._slice(deadline))
                except DBAPIError as err:
                    if self._cancelled(err):
                        raise self._timeout(deadline, cancelled=True) from err
                    raise
                if not locked and self._waited_out(conn, deadline):
                    raise self._timeout(deadline)
            self.conn = conn
            session = self._locked(conn)
            self.verify()
            self._hold(conn, session)
        except BaseException:
            self.conn = None
            if locked:
                self.conn = conn
                self.release()  # confirmed, or the session is ended
            else:
                self._close_unlocked(conn)
            raise

    # -- what a backend supplies: its SQL, one attempt at a time ----------------

    def _open_session(self, conn: Connection) -> None:
        """Once, before the wait: prepare the lock's session (label it, lift the
        server's limits on idle sessions: :meth:`lift_session_limits`), committed."""
        self.lift_session_limits(conn)

    def lift_session_limits(self, conn: Connection) -> None:
        """Per dialect: keep the server from ending this session of seedguard's while
        it idles (between a unit's statements, between heartbeats), committed.

        The lock's and the heartbeat's sessions must outlive a role's or a
        database's idle limits for as long as the lock is held; a statement's
        own time limit is left to the application (units run under it).
        """

    def _try_acquire(self, conn: Connection, stretch: Deadline) -> bool:
        """One attempt: take the lock on ``conn``, waiting at most ``stretch``.

        True once held; False when the stretch ran out (the connection ready
        for the next attempt). A server that cancels the wait raises, and
        :meth:`_cancelled` tells that from other errors.
        """
        raise NotImplementedError

    def _cancelled(self, err: Exception) -> bool:
        """Whether ``err`` is the server ending the wait (a statement limit, an admin)."""
        return False

    def _locked(self, conn: Connection) -> int:
        """Once the lock is had: put back what was set for the wait only; the server's
        id of the session holding it."""
        return self.session_id(conn)

    def _restore_session(self, conn: Connection) -> None:
        """Per dialect: the session as the application had it, before it goes back to
        its pool (labels, limits, keepalives seedguard set on it)."""

    def _close_unlocked(self, conn: Connection) -> None:
        """Close a lock connection whose lock was never granted, its settings put back.

        A session that cannot be cleaned is ended rather than pooled.
        """
        try:
            conn.rollback()
            self._restore_session(conn)
            conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.invalidate()
        finally:
            conn.close()

    def release(self) -> None:
        """Unlock on the lock's own session, and never hand a locked session to the pool.

        The unlock is confirmed by the server; when it cannot be (the
        session failed, the statement errs, the server says the lock was not
        ours), the connection is invalidated instead of returned: the server
        drops a session's locks when the session ends, while a pooled session
        still holding the lock would block every applier until the
        application restarts.
        """
        conn, self.conn = self.conn, None
        if conn is None:
            return
        lost = self._end_lease()
        if lost is not None:
            # The server has ended the session or will (keepalives, or a waiter
            # that found the lease run out): no unlock to try, no session to name.
            log.warning("the database lock %r was lost with its lease (%s); the server "
                        "releases it with the session", self._key, lost)
            with contextlib.suppress(Exception):
                conn.invalidate()
            conn.close()
            return
        released = False
        try:
            # First end whatever transaction is open: a failed statement (the
            # ledger's creation, a unit) leaves PostgreSQL's transaction aborted,
            # and it refuses every statement until then, the unlock included.
            conn.rollback()
            if self._release(conn):
                # The connection goes back to the caller's pool: no seedguard
                # label or limits on it (a failure here ends the session instead).
                self._restore_session(conn)
                conn.commit()
                released = True
        except Exception as err:  # reported, and the session is ended below
            log.warning("could not release the database lock %r (%s: %s); closing its "
                        "connection so the server releases it", self._key, type(err).__name__,
                        str(err).splitlines()[0] if str(err) else "")
        finally:
            if not released:
                with contextlib.suppress(Exception):
                    conn.invalidate()
            else:
                self._restore_socket(conn)
            conn.close()

    def verify(self) -> None:
        """Raise if the lock was lost (its connection died, or its lease ran out)."""
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.lost is not None:
            raise SeedguardError(
                f"lost the database lock {self.key!r} with its lease ({heartbeat.lost}); "
                "stopped before the next unit so no unit runs unprotected; the server ends "
                "this applier's session, so nothing more of it is recorded; run again to "
                "continue"
            )
        self._verify()

    def _verify(self) -> None:
        """Per dialect: raise if the lock's session no longer holds the lock."""

    # -- the lease ------------------------------------------------------------

    def session_id(self, conn: Connection) -> int:
        """The server's id of ``conn``'s session (what ``end_session`` takes)."""
        raise NotImplementedError

    def owner_session(self, conn: Connection) -> int | None:
        """The server session holding the lock now, read on ``conn``; None if free."""
        return None

    def end_session(self, conn: Connection, session: int) -> None:
        """End another server session (its transaction rolls back, its locks go)."""
        raise NotImplementedError

    def age_sql(self, column: str) -> str:
        """SQL for the seconds since ``column`` (a UTC timestamp), by the server's clock."""
        raise NotImplementedError

    def _slice(self, deadline: Deadline) -> Deadline:
        """The next stretch of a wait: short enough to look at the holder's lease in between."""
        step = max(1.0, self.lease / 5)
        remaining = deadline.remaining()
        return Deadline(step if remaining is None else min(remaining, step))

    def _waited_out(self, conn: Connection, deadline: Deadline) -> bool:
        """After a stretch of waiting: True when the wait is over (time is up).

        In between, a holder whose lease ran out (its host vanished) has its
        sessions ended, and the next stretch takes the lock.
        """
        from seedguard.locks.lease import take_over_if_vanished

        took_over = False
        if self.ledger is not None and self._key is not None:
            took_over = take_over_if_vanished(self, conn)
        remaining = deadline.remaining()
        return remaining is not None and remaining <= 0 and not took_over

    def _hold(self, conn: Connection, session: int) -> None:
        """The holder's half of the lease, once the lock is had on ``conn``.

        Keepalives and a user timeout on the lock's socket (and the server's
        side where the dialect can: :meth:`_server_keepalives`), a connect
        timeout for connections opened while the lock is held, and the
        heartbeat. Async drivers get the keepalives but no heartbeat thread:
        their connections belong to an event loop.
        """
        from sqlalchemy import event

        from seedguard.locks.lease import Heartbeat, Timings, tune_socket

        timings = Timings(self.lease)
        dbapi = conn.connection.dbapi_connection
        self._saved_socket = tune_socket(dbapi, idle=timings.idle, interval=timings.interval,
                                         count=timings.count,
                                         user_timeout_ms=timings.user_timeout_ms)
        self._server_keepalives(conn, timings)
        argument = self.connect_timeout_args.get(self.engine.dialect.driver)
        if argument is not None:
            seconds = timings.connect_timeout

            def connect_timeout(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
                # A connect during a network cut would hang for minutes of SYN
                # retries (the release of a failed run used to); the app's own
                # connect timeout, if it set one, wins.
                cparams.setdefault(argument, seconds)

            event.listen(self.engine, "do_connect", connect_timeout)
            self._connect_listener = connect_timeout
        if self.ledger is not None and not conn.dialect.is_async:
            self._heartbeat = Heartbeat(self, session, timings, dbapi)
            self._heartbeat.start()

    def _server_keepalives(self, conn: Connection, timings: Timings) -> None:
        """Per dialect: have the server end this session when its client goes silent."""

    def _end_lease(self) -> str | None:
        """Stop the heartbeat (deleting the holder row) and the connect timeout;
        why the lease was lost, or None."""
        from sqlalchemy import event

        heartbeat, self._heartbeat = self._heartbeat, None
        listener, self._connect_listener = self._connect_listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                event.remove(self.engine, "do_connect", listener)
        if heartbeat is None:
            return None
        heartbeat.stop()
        return heartbeat.lost

    def _restore_socket(self, conn: Connection) -> None:
        from seedguard.locks.lease import restore_socket

        saved, self._saved_socket = self._saved_socket, []
        with contextlib.suppress(Exception):
            restore_socket(conn.connection.dbapi_connection, saved)

    def lock_unit(self, conn: Connection, deadline: Deadline) -> None:
        """Take a lock that lasts for ``conn``'s current transaction.

        Only the transaction-level mode (PgBouncer) does anything here; the
        session locks are already held for the whole run.
        """

    @property
    def work_connection(self) -> Connection | None:
        """The connection units may run on, if the lock lives on one.

        Running units on the lock's own session means an applier uses one
        connection, not two: 64 appliers fit in PostgreSQL's default
        ``max_connections = 100``. Session-level locks (``pg_advisory_lock``,
        ``GET_LOCK``) survive the per-unit commits and rollbacks, and a lost
        lock connection then also fails the unit that was running on it.
        """
        return self.conn

    def holder(self) -> str | None:
        """Who holds the lock right now, or None if nobody does."""
        return None

    def _release(self, conn: Connection) -> bool:
        """Unlock on ``conn``; True only when the server confirmed it."""
        return True

    def _lost(self, err: Exception) -> SeedguardError:
        return SeedguardError(
            f"lost the database lock {self.key!r} (its connection failed: "
            f"{type(err).__name__}); stopped before the next unit so no unit runs "
            "unprotected; run again to continue"
        )

    def _timeout(self, deadline: Deadline, *, cancelled: bool = False) -> LockTimeout:
        """The wait's end, with the time really waited and the holder named.

        ``cancelled``: the server, not lock_timeout, ended the wait (a
        statement limit seedguard could not lift, or an administrator).
        """
        holder = self.holder() or "an unknown holder"
        if cancelled:
            why = ("the server cancelled the wait (a statement time limit or an "
                   "administrator); wait for the holder to finish, or lift that limit")
        else:
            why = "wait for it to finish or raise {lock_timeout}"
        return LockTimeout(
            f"timed out after {deadline.elapsed():.1f} s ({deadline.describe()}) waiting for "
            f"the database lock {self.key!r}, held by {holder}; " + why,
            lock=self.key, holder=holder, settings=() if cancelled else ("lock_timeout",),
        )


def database_lock(engine: Engine, key: LockKey, mode: str = "session", *,
                  lease: float = DEFAULT_LEASE) -> DatabaseLock:
    """The database lock for ``engine``'s dialect and ``mode``.

    :param engine: the engine the lock opens its own connection from.
    :param key: a :class:`LedgerKey` (from :func:`lock_key`), resolved on the
        server when the lock is taken, or a key string used as it is.
    :param mode: ``"session"`` (the default) or ``"transaction"`` (PostgreSQL
        behind a transaction-pooling proxy).
    :param lease: seconds; how long a holder whose host vanished keeps other
        appliers waiting (see :mod:`seedguard.locks.lease`).
    """
    dialect = engine.dialect.name
    if mode == "transaction":
        cls = TRANSACTION_LOCKS.get(dialect)
        if cls is None:
            raise ConfigError(
                f"lock_mode=\"transaction\" is for PostgreSQL behind a transaction-pooling "
                f"proxy such as PgBouncer; {dialect!r} has no transaction-level "
                "lock: use the default lock_mode=\"session\""
            )
    else:
        cls = DATABASE_LOCKS.require(dialect, ConfigError)
    return cls(engine, key, lease=lease)


@overload
def lock_key(engine: Engine, ledger_name: str, schema: str | None) -> LedgerKey: ...
@overload
def lock_key(engine: Engine, ledger_name: str, schema: str | None,
             conn: Connection) -> str: ...
def lock_key(engine: Engine, ledger_name: str, schema: str | None,
             conn: Connection | None = None) -> LockKey:
    """The database lock's key for the ledger ``schema.ledger_name``.

    :param engine: the ledger's engine (its dialect decides how the server is asked).
    :param ledger_name: the ledger table's name.
    :param schema: the explicit ``ledger_schema``, or None for the connection's default.
    :param conn: if given, the key is read from the server on it now and
        returned as text (``database.schema.table``); without it, a
        :class:`LedgerKey` that the lock resolves on its own connection.

    The key never comes from the URL's text: a database implied by the user
    name and one spelled out, or the default schema and the same schema
    named, are one ledger and take one lock.
    """
    key = LedgerKey(ledger_name, schema)
    if conn is None:
        return key
    return database_lock(engine, key).resolve(conn)
