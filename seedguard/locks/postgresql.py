"""PostgreSQL advisory locks: one per session (the default), or one per unit transaction."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from seedguard.errors import ConfigError
from seedguard.locks.base import DatabaseLock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.locks.deadline import Deadline

log = logging.getLogger(__name__)

# How many transactions to try to get back to the lock's own server session
# when a transaction pooler sits in between (see PostgresSessionLock._release).
_UNLOCK_TRIES = 64


class PostgresSessionLock(DatabaseLock):
    """``pg_advisory_lock`` on a dedicated session, waited for with ``lock_timeout``.

    Unsafe behind PgBouncer in transaction pooling: the session the lock is
    taken on is handed to other clients between transactions. Use
    ``lock_mode="transaction"`` there.
    """

    dialects = ("postgresql",)

    @property
    def number(self) -> int:
        digest = hashlib.sha256(self.key.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def acquire(self, deadline: Deadline) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        from seedguard.connect import connection_errors

        with connection_errors(self.engine):
            conn = self.engine.connect()
        try:
            remaining = deadline.remaining()
            # lock_timeout bounds a blocked pg_advisory_lock; 0 would mean "forever".
            timeout_ms = 0 if remaining is None else max(1, int(remaining * 1000))
            host = socket.gethostname()[:30]
            conn.execute(text("SELECT set_config('application_name', :name, false)"),
                         {"name": f"seedguard pid={os.getpid()} host={host}"})
            conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"),
                         {"ms": f"{timeout_ms}ms"})
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.number})
            except DBAPIError as err:
                if getattr(err.orig, "sqlstate", None) == "55P03":  # lock_not_available
                    conn.rollback()
                    raise self._timeout(deadline) from err
                raise
            # Back to the session's own setting (units now run on this session),
            # not to 0: a lock_timeout the application configured stays.
            conn.execute(text("RESET lock_timeout"))
            self.backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            conn.commit()
            self.conn = conn
            # Behind a transaction-pooling proxy (PgBouncer pool_mode=transaction)
            # the next transaction may run on another server session, without
            # the lock, and the lock's session may be handed to a second
            # applier, which then "takes" it again (advisory locks are
            # re-entrant). Check now, before any work, and before every unit.
            self.verify()
        except BaseException:
            self.conn = None
            conn.close()
            raise

    backend_pid: int | None = None
    _unlocked = False

    def _release(self, conn: Connection) -> None:
        from sqlalchemy import text

        if self._unlocked:
            return
        # Unlock on the session that took the lock. Directly connected that is
        # the first try; behind a transaction pooler (detected by verify) each
        # transaction may land on another server session, and an unlock
        # elsewhere would leave the lock held in the pool, blocking every
        # applier until the pooler closes that session.
        with contextlib.suppress(Exception):
            for _ in range(_UNLOCK_TRIES):
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                if self.backend_pid is None or pid == self.backend_pid:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.number})
                    # The connection goes back to the caller's pool: no seedguard label on it.
                    conn.execute(text("RESET application_name"))
                    conn.commit()
                    self._unlocked = True
                    return
                conn.commit()
            log.warning("could not reach PostgreSQL session %s to release the database lock "
                        "%r; it is released when that session ends (pg_terminate_backend(%s))",
                        self.backend_pid, self.key, self.backend_pid)

    def verify(self) -> None:
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

    def holder(self) -> str | None:
        from sqlalchemy import text

        number = self.number
        query = text(
            "SELECT a.pid, a.application_name, a.client_addr, a.state_change "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
        )
        unsigned = number & 0xFFFFFFFFFFFFFFFF
        try:
            with self.engine.connect() as conn:
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

    dialects = ("postgresql",)
    per_transaction = True

    def acquire(self, deadline: Deadline) -> None:
        pass

    def verify(self) -> None:
        pass

    @property
    def work_connection(self) -> Connection | None:
        return None

    def lock_unit(self, conn: Connection, deadline: Deadline) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        remaining = deadline.remaining()
        timeout_ms = 0 if remaining is None else max(1, int(remaining * 1000))
        # set_config(..., true) is SET LOCAL: it ends with this transaction,
        # so it never leaks into a pooled session another client gets next.
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"),
                     {"ms": f"{timeout_ms}ms"})
        try:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.number})
        except DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise self._timeout(deadline) from err
            raise
        # TO DEFAULT: the session's own value, so the unit runs with the
        # lock_timeout the application configured, not with ours.
        conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
