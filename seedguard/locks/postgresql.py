"""PostgreSQL advisory locks: one per session (the default), or one per unit transaction.

The lock's key is the ledger as the server sees it: ``current_database()``
and the schema the ledger table lives in (the explicit ``ledger_schema``, else
the first schema of the search path that has it, else ``current_schema()``,
where it would be created). It is read in the statement that also labels the
session, so it costs no extra round trip.

Waits are bounded by ``lock_timeout`` alone: the lock statement runs with
seedguard's own ``lock_timeout`` and a ``statement_timeout`` just above it, so
a shorter ``statement_timeout`` set on the database, the role or the session
does not cancel the wait; both go back to the session's own values after it,
so units, which run on the lock's session, keep the application's limits.
The server's limits on idle sessions (``idle_session_timeout``,
``idle_in_transaction_session_timeout``) are lifted on the lock's and the
heartbeat's sessions while the lock is held, and put back at release.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar

from seedguard.errors import ConfigError
from seedguard.locks.base import TRANSACTION_LOCKS, DatabaseLock, LedgerKey

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.locks.deadline import Deadline
    from seedguard.locks.lease import Timings

log = logging.getLogger(__name__)

# How many transactions to try to get back to the lock's own server session
# when a transaction pooler sits in between (see PostgresSessionLock._release).
_UNLOCK_TRIES = 64

# lock_timeout and statement_timeout are int milliseconds (about 24.8 days):
# a longer finite wait is clamped to that, and "no limit" is 0.
_MAX_MS = 2**31 - 1
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ended the wait
_QUERY_CANCELED = "57014"  # statement_timeout, pg_cancel_backend: the server ended it

# The first schema of the search path holding the ledger (where an unqualified
# name finds it), else current_schema() (where CREATE TABLE would put it).
_SCHEMA_OF_LEDGER = (
    "COALESCE((SELECT s.name FROM unnest(current_schemas(false)) WITH ORDINALITY "
    "AS s(name, pos) WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = s.name AND c.relname = :sg_table) ORDER BY s.pos LIMIT 1), "
    "current_schema(), '')"
)
# The settings the wait sets on the lock's session, and puts back afterwards.
_WAIT_SETTINGS = ("lock_timeout", "statement_timeout")
# The server settings the lease sets on the lock's session, and the release
# puts back; each exists since the version given (server_version_info).
_KEEPALIVES = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
               "tcp_user_timeout", "client_connection_check_interval")
# The server's limits on idle sessions (set by ALTER ROLE/DATABASE ... SET or
# postgresql.conf): a lock session idles inside a unit's transaction while the
# unit's Python runs, a heartbeat's between two beats; either ended by the
# server would lose the lock, so both are off on seedguard's sessions.
_IDLE_LIMITS = ("idle_session_timeout", "idle_in_transaction_session_timeout")
_SINCE = {"tcp_user_timeout": (12,), "client_connection_check_interval": (14,),
          "idle_session_timeout": (14,)}


def _restore(names: tuple[str, ...], *, local: str) -> str:
    """A select-list item putting each setting back to its RESET value (absent ones are
    skipped): the values of connection options, ALTER ROLE/DATABASE ... SET and
    postgresql.conf, the application's settings rather than seedguard's.

    One scan of ``pg_settings`` for all of them: the view builds every one of
    the server's ~350 settings each time it is read, so a subquery per
    setting cost 0.5 ms each (5.4 ms for a lock's release on PostgreSQL 15,
    against 0.6 ms for one scan).
    """
    listed = ", ".join(f"'{name}'" for name in names)
    return (f"(SELECT count(set_config(name, reset_val, {local})) FROM pg_catalog.pg_settings "
            f"WHERE name IN ({listed}))")


def _available(conn: Connection, names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` the server behind ``conn`` has (by its version)."""
    version = conn.dialect.server_version_info or (0,)
    return [name for name in names if version >= _SINCE.get(name, (0,))]


def _wait_settings(deadline: Deadline) -> dict[str, str]:
    """lock_timeout for the remaining budget, and a statement_timeout just above it.

    lock_timeout 0 would mean "forever", so a spent budget is 1 ms. The
    statement limit is a backstop that replaces whatever shorter one the
    session has; a second more lets lock_timeout (which names the wait) fire
    first.
    """
    remaining = deadline.remaining()
    if remaining is None:
        return {"sg_lock_ms": "0", "sg_statement_ms": "0"}
    lock_ms = min(_MAX_MS, max(1, int(remaining * 1000)))
    return {"sg_lock_ms": str(lock_ms), "sg_statement_ms": str(min(_MAX_MS, lock_ms + 1000))}


def _sqlstate(err: Exception) -> str | None:
    return getattr(getattr(err, "orig", None), "sqlstate", None)


class PostgresSessionLock(DatabaseLock):
    """``pg_advisory_lock`` on a dedicated session, waited for with ``lock_timeout``.

    Unsafe behind PgBouncer in transaction pooling: the session the lock is
    taken on is handed to other clients between transactions. Use
    ``lock_mode="transaction"`` there.
    """

    dialects = ("postgresql",)
    leased = True
    connect_timeout_args: ClassVar[dict[str, str]] = {
        "psycopg": "connect_timeout", "psycopg2": "connect_timeout",
        "psycopg_async": "connect_timeout", "asyncpg": "timeout", "pg8000": "timeout"}
    backend_pid: int | None = None
    _unlocked = False

    @property
    def number(self) -> int:
        digest = hashlib.sha256(self.key.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def server_key(self, conn: Connection, ledger: LedgerKey) -> str:
        from sqlalchemy import text

        columns, params = self._identity(ledger)
        row = conn.execute(text(f"SELECT {columns}"), params).one()
        return self._key_of(row[0], row[1], ledger)

    def _identity(self, ledger: LedgerKey | None) -> tuple[str, dict[str, Any]]:
        """Select-list columns naming the ledger's database and schema (NULLs once known)."""
        if self._key is not None or ledger is None:
            return "NULL, NULL", {}
        if ledger.schema is not None:
            return "current_database(), CAST(:sg_schema AS text)", {"sg_schema": ledger.schema}
        return f"current_database(), {_SCHEMA_OF_LEDGER}", {"sg_table": ledger.table}

    def _key_of(self, database: str | None, schema: str | None, ledger: LedgerKey) -> str:
        return f"{database or ''}.{schema or ''}.{ledger.table}"

    def _take_key(self, row: Any) -> None:
        if self._key is None and self.ledger is not None:
            self._key = self._key_of(row[0], row[1], self.ledger)

    def _open_session(self, conn: Connection) -> None:
        from sqlalchemy import text

        host = socket.gethostname()[:30]
        names = _available(conn, _IDLE_LIMITS)
        # Session-level settings (is_local false), committed: the rollback that
        # ends a stretch of the wait would undo them otherwise.
        conn.execute(text(
            "SELECT set_config('application_name', :sg_name, false)"
            + "".join(f", set_config('{name}', '0', false)" for name in names)),
            {"sg_name": f"seedguard pid={os.getpid()} host={host}"})
        conn.commit()

    def lift_session_limits(self, conn: Connection) -> None:
        from sqlalchemy import text

        names = _available(conn, _IDLE_LIMITS)
        conn.execute(text("SELECT " + ", ".join(
            f"set_config('{name}', '0', false)" for name in names)))
        conn.commit()

    def _try_acquire(self, conn: Connection, stretch: Deadline) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        columns, params = self._identity(self.ledger)
        # Session-level (is_local false): they hold for the lock statement whether
        # or not the engine runs in AUTOCOMMIT, and _locked puts them back.
        row = conn.execute(text(
            f"SELECT {columns}, set_config('lock_timeout', :sg_lock_ms, false), "
            "set_config('statement_timeout', :sg_statement_ms, false)"),
            {**params, **_wait_settings(stretch)}).one()
        self._take_key(row)
        try:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.number})
        except DBAPIError as err:
            if _sqlstate(err) != _LOCK_NOT_AVAILABLE:
                raise
            conn.rollback()  # the stretch is over, not the wait
            return False
        self._unlocked = False
        return True

    def _cancelled(self, err: Exception) -> bool:
        return _sqlstate(err) == _QUERY_CANCELED

    def _locked(self, conn: Connection) -> int:
        from sqlalchemy import text

        # Units run on this session next: the application's own timeouts,
        # not seedguard's wait settings.
        self.backend_pid = int(conn.execute(text(
            f"SELECT pg_backend_pid(), {_restore(_WAIT_SETTINGS, local='false')}")).scalar_one())
        conn.commit()
        # Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction)
        # the next transaction may run on another server session, without
        # the lock, and the lock's session may be handed to a second
        # applier, which then "takes" it again (advisory locks are
        # re-entrant): verify() compares this pid before any work, and
        # before every unit.
        return self.backend_pid

    def _restore_session(self, conn: Connection) -> None:
        from sqlalchemy import text

        conn.execute(text("SELECT " + _restore(
            ("application_name", *_WAIT_SETTINGS, *_KEEPALIVES, *_IDLE_LIMITS),
            local="false")))

    def _release(self, conn: Connection) -> bool:
        from sqlalchemy import text

        if self._unlocked:
            return True
        # Unlock on the session that took the lock. Directly connected that is
        # the first try; behind a transaction pooler (detected by verify) each
        # transaction may land on another server session, and an unlock
        # elsewhere would leave the lock held in the pool, blocking every
        # applier until the pooler closes that session. One round trip per
        # try: the unlock runs only on the lock's own session (NULL elsewhere:
        # CASE does not evaluate a branch it does not take).
        unlock = text("SELECT CASE WHEN CAST(:pid AS integer) IS NULL "
                      "OR pg_backend_pid() = CAST(:pid AS integer) "
                      "THEN pg_advisory_unlock(:key) END")
        for _ in range(_UNLOCK_TRIES):
            unlocked = conn.execute(unlock, {"pid": self.backend_pid,
                                             "key": self.number}).scalar()
            if unlocked is not None:
                if not unlocked:  # the server says this session did not hold it
                    log.warning("the database lock %r was not held by its session at release",
                                self.key)
                    return False
                self._unlocked = True
                return True
            conn.commit()
        log.warning("could not reach PostgreSQL session %s to release the database lock "
                    "%r; it is released when that session ends (pg_terminate_backend(%s))",
                    self.backend_pid, self.key, self.backend_pid)
        return False

    def _verify(self) -> None:
        """Raise if the lock's session died, or if we are no longer talking to it.

        A different ``pg_backend_pid()`` than the one that took the lock can
        only mean a pooler in transaction mode: say so and name the safe mode.
        """
        from sqlalchemy import text

        if self.conn is None:
            return
        unsigned = self.number & 0xFFFFFFFFFFFFFFFF
        try:
            pid, held = self.conn.execute(text(
                "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks WHERE "
                "locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
                "AND classid = :hi AND objid = :lo AND objsubid = 1)"),
                {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).one()
            self.conn.commit()
        except Exception as err:
            raise self._lost(err) from err
        if pid != self.backend_pid:
            # Best effort: release() ends the session if this cannot confirm it.
            with contextlib.suppress(Exception):
                self._release(self.conn)
            raise ConfigError(
                f"the PostgreSQL session holding the database lock {self.key!r} changed "
                f"between transactions (server pid {self.backend_pid}, now {pid}): a "
                "connection pooler in transaction mode (PgBouncer?) sits in front of the "
                "server, and a session lock is not safe there; use lock_mode=\"transaction\" "
                "(SEEDGUARD_LOCK_MODE=transaction) or connect to the server directly"
            )
        if not held:
            raise self._lost(RuntimeError("the advisory lock is no longer held by this session"))

    # -- the lease (seedguard.locks.lease) ---------------------------------------

    utc_now_sql = "CAST(clock_timestamp() AT TIME ZONE 'UTC' AS timestamp)"

    def age_sql(self, column: str) -> str:
        return f"EXTRACT(EPOCH FROM ({self.utc_now_sql} - {column}))"

    def session_id(self, conn: Connection) -> int:
        from sqlalchemy import text

        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def owner_session(self, conn: Connection) -> int | None:
        from sqlalchemy import text

        unsigned = self.number & 0xFFFFFFFFFFFFFFFF
        pid = conn.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = :hi AND objid = :lo AND objsubid = 1"),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).scalar()
        return None if pid is None else int(pid)

    def end_session(self, conn: Connection, session: int) -> None:
        from sqlalchemy import text

        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": session})

    def _server_keepalives(self, conn: Connection, timings: Timings) -> None:
        """The server ends this session when the client goes silent, within the lease.

        Keepalives alone free the lock of an idle session (one waiting for the
        client's next statement); ``client_connection_check_interval``
        (PostgreSQL 14+) makes a backend in the middle of a long statement look
        at its socket too, so a unit's long statement does not keep the lock of
        a vanished client until it ends. Client-side keepalives alone do not
        free the lock: the holder notices, the server does not.
        """
        from sqlalchemy import text

        values = {"tcp_keepalives_idle": timings.idle,
                  "tcp_keepalives_interval": timings.interval,
                  "tcp_keepalives_count": timings.count,
                  "tcp_user_timeout": timings.user_timeout_ms,
                  "client_connection_check_interval": timings.check_interval_ms}
        names = _available(conn, tuple(values))
        conn.execute(text("SELECT " + ", ".join(
            f"set_config('{name}', :{name}, false)" for name in names)),
            {name: str(values[name]) for name in names})
        conn.commit()

    def holder(self) -> str | None:
        from sqlalchemy import text

        query = text(
            "SELECT a.pid, a.application_name, a.client_addr, a.state_change "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
        )
        try:
            with self.engine.connect() as conn:
                self.resolve(conn)
                number = self.number
                unsigned = number & 0xFFFFFFFFFFFFFFFF
                params = {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}
                row = conn.execute(query, params).first()
        except Exception:
            return None
        if row is None:
            return None
        since = row.state_change.isoformat(timespec="seconds") if row.state_change else "?"
        return (f"{row.application_name or 'backend'} (server pid {row.pid}, "
                f"client {row.client_addr or 'local'}) since {since}")


class PostgresTransactionLock(PostgresSessionLock):
    """``pg_advisory_xact_lock`` inside each unit's transaction (``lock_mode="transaction"``).

    Safe behind PgBouncer in transaction pooling, where one client's
    transactions may each run on a different server session, so no lock may
    outlive a transaction. Nothing is held between units: the runner takes
    this lock as the first statement of each unit's transaction (and of the
    ledger's creation) and re-reads the unit's ledger row under it. The lock
    is released by the commit or rollback, or by the server when the client
    dies. With psycopg 3 and PgBouncer < 1.21, also pass
    ``connect_args={"prepare_threshold": None}`` (no server-side prepared
    statements).
    """

    registry = TRANSACTION_LOCKS
    dialects = ("postgresql",)
    per_transaction = True

    def acquire(self, deadline: Deadline) -> None:
        pass

    def _verify(self) -> None:
        pass

    @property
    def work_connection(self) -> Connection | None:
        return None

    def lock_unit(self, conn: Connection, deadline: Deadline) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        # set_config(..., true) is SET LOCAL: it ends with this transaction,
        # so it never leaks into a pooled session another client gets next.
        columns, params = self._identity(self.ledger)
        row = conn.execute(text(
            f"SELECT {columns}, set_config('lock_timeout', :sg_lock_ms, true), "
            "set_config('statement_timeout', :sg_statement_ms, true)"),
            {**params, **_wait_settings(deadline)}).one()
        self._take_key(row)
        try:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.number})
        except DBAPIError as err:
            state = _sqlstate(err)
            if state in (_LOCK_NOT_AVAILABLE, _QUERY_CANCELED):
                raise self._timeout(deadline, cancelled=state == _QUERY_CANCELED) from err
            raise
        # The session's own values for the rest of the unit's transaction, so
        # the unit runs with the timeouts the application configured, not ours.
        conn.execute(text(f"SELECT {_restore(_WAIT_SETTINGS, local='true')}"))
