"""MySQL and MariaDB: ``GET_LOCK`` on a dedicated session.

The lock's name is derived from the ledger's database as the server names it
(the explicit ``ledger_schema``, which is a database there, else
``DATABASE()``) and its table; the server computes it in the statement that
takes the lock, so knowing it costs no extra round trip. GET_LOCK names are
server-wide, hence the database in them.

Waits are bounded by ``lock_timeout`` alone: GET_LOCK runs with the server's
statement time limit lifted for that one statement (MariaDB ``SET STATEMENT
max_statement_time = 0 FOR``, MySQL's ``MAX_EXECUTION_TIME`` hint), so a
shorter per-user or per-session limit does not cut the wait short, and no
session setting needs putting back afterwards. ``wait_timeout``, which ends a
session idle between two statements (a unit's Python running on the lock's
session, a heartbeat between beats), is raised on seedguard's sessions while
the lock is held and put back at release.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar

from seedguard.locks.base import DatabaseLock, LedgerKey

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.locks.deadline import Deadline

log = logging.getLogger(__name__)

# GET_LOCK takes whole seconds, and MariaDB answers NULL to the "negative waits
# forever" of MySQL: "forever", and any longer finite wait, is a year.
_YEAR = 365 * 24 * 3600
# ER_STATEMENT_TIMEOUT (MariaDB max_statement_time), ER_QUERY_TIMEOUT (MySQL
# max_execution_time), ER_QUERY_INTERRUPTED (KILL QUERY): the server ended the wait.
_CANCELLED = frozenset({1969, 3024, 1317})
# wait_timeout's largest value on every platform (seconds): the lock's session
# is watched by the lease instead (a vanished holder's session is KILLed).
_LONGEST_WAIT_TIMEOUT = 31536000


def _name_of(key: str) -> str:
    # GET_LOCK names are at most 64 characters.
    return "seedguard:" + hashlib.sha256(key.encode()).hexdigest()[:40]


class MySQLLock(DatabaseLock):
    """``GET_LOCK`` on a dedicated session (MySQL and MariaDB)."""

    dialects = ("mysql", "mariadb")
    leased = True
    connect_timeout_args: ClassVar[dict[str, str]] = {
        "pymysql": "connect_timeout", "mysqldb": "connect_timeout", "aiomysql": "connect_timeout",
        "asyncmy": "connect_timeout", "mariadbconnector": "connect_timeout",
        "mysqlconnector": "connection_timeout"}
    utc_now_sql = "UTC_TIMESTAMP(6)"
    _lock_name: str | None = None
    _session: int | None = None
    _saved_wait_timeout: int | None = None

    @property
    def lock_name(self) -> str:
        if self._lock_name is None:
            self._lock_name = _name_of(self.key)
        return self._lock_name

    def server_key(self, conn: Connection, ledger: LedgerKey) -> str:
        from sqlalchemy import text

        database = conn.execute(text("SELECT COALESCE(:sg_schema, DATABASE(), '')"),
                                {"sg_schema": ledger.schema}).scalar()
        return self._key_of(str(database), ledger)

    @staticmethod
    def _key_of(database: str, ledger: LedgerKey) -> str:
        # "database..table": the schema part stays empty (a schema is a
        # database here), which keeps the name of earlier releases for a URL
        # that names the database.
        return f"{database}..{ledger.table}"

    def _lock_statement(self, conn: Connection, seconds: int) -> tuple[str, dict[str, Any]]:
        """GET_LOCK, with the key and the name worked out by the server when not yet known."""
        params: dict[str, Any]
        if self._key is not None or self.ledger is None:
            key_sql, params = "CAST(:sg_key AS CHAR)", {"sg_key": self.key}
        else:
            key_sql = "CONCAT(COALESCE(:sg_schema, DATABASE(), ''), '..', :sg_table)"
            params = {"sg_schema": self.ledger.schema, "sg_table": self.ledger.table}
        if getattr(conn.dialect, "is_mariadb", False):
            prefix, hint = "SET STATEMENT max_statement_time = 0 FOR ", ""
        else:
            # The hint replaces the session's limit for this statement (0 would
            # mean "the session's limit", so give the wait plus a margin, within
            # the 32-bit range every MySQL build accepts: about 49 days).
            limit_ms = min(2**32 - 1, (seconds + 5) * 1000)
            prefix, hint = "", f"/*+ MAX_EXECUTION_TIME({limit_ms}) */ "
        sql = (f"{prefix}SELECT {hint}k.sg_key, k.sg_name, GET_LOCK(k.sg_name, :sg_timeout), "
               "CONNECTION_ID() "
               f"FROM (SELECT t.sg_key, CONCAT('seedguard:', LEFT(SHA2(t.sg_key, 256), 40)) "
               f"AS sg_name FROM (SELECT {key_sql} AS sg_key) t) k")
        return sql, {**params, "sg_timeout": seconds}

    def _open_session(self, conn: Connection) -> None:
        from sqlalchemy import text

        # The application's own value (its init_command, the server's default),
        # put back by _restore_session before the session returns to its pool.
        self._saved_wait_timeout = int(conn.execute(
            text("SELECT @@session.wait_timeout")).scalar_one())
        self.lift_session_limits(conn)

    def lift_session_limits(self, conn: Connection) -> None:
        from sqlalchemy import text

        conn.execute(text(f"SET SESSION wait_timeout = {_LONGEST_WAIT_TIMEOUT}"))
        conn.commit()

    def _try_acquire(self, conn: Connection, stretch: Deadline) -> bool:
        from sqlalchemy import text

        remaining = stretch.remaining()
        seconds = _YEAR if remaining is None else min(_YEAR, max(0, math.ceil(remaining)))
        sql, params = self._lock_statement(conn, seconds)
        key, name, got, session = conn.execute(text(sql), params).one()
        conn.commit()
        self._key, self._lock_name, self._session = str(key), str(name), int(session)
        return bool(got == 1)

    def _cancelled(self, err: Exception) -> bool:
        args = getattr(getattr(err, "orig", None), "args", None) or (None,)
        return args[0] in _CANCELLED

    def _locked(self, conn: Connection) -> int:
        assert self._session is not None
        return self._session

    def _restore_session(self, conn: Connection) -> None:
        from sqlalchemy import text

        saved, self._saved_wait_timeout = self._saved_wait_timeout, None
        if saved is not None:
            conn.execute(text(f"SET SESSION wait_timeout = {int(saved)}"))

    def _release(self, conn: Connection) -> bool:
        from sqlalchemy import text

        released = conn.execute(text("SELECT RELEASE_LOCK(:name)"),
                                {"name": self.lock_name}).scalar()
        if released != 1:  # 0: held by another session; NULL: not held at all
            log.warning("the database lock %r was not held by its session at release (%s)",
                        self.key, released)
            return False
        return True

    def _verify(self) -> None:
        from sqlalchemy import text

        if self.conn is None:
            return
        try:
            mine = self.conn.execute(
                text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"), {"name": self.lock_name}
            ).scalar()
            self.conn.commit()
        except Exception as err:
            raise self._lost(err) from err
        if not mine:
            raise self._lost(RuntimeError("lock no longer held by this session"))

    # -- the lease (seedguard.locks.lease) ---------------------------------------

    def age_sql(self, column: str) -> str:
        return f"TIMESTAMPDIFF(MICROSECOND, {column}, {self.utc_now_sql}) / 1000000.0"

    def session_id(self, conn: Connection) -> int:
        from sqlalchemy import text

        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())

    def owner_session(self, conn: Connection) -> int | None:
        from sqlalchemy import text

        owner = conn.execute(text("SELECT IS_USED_LOCK(:name)"),
                             {"name": self.lock_name}).scalar()
        return None if owner is None else int(owner)

    def end_session(self, conn: Connection, session: int) -> None:
        from sqlalchemy import text

        # KILL takes no bound parameter; the id is an int read from the server.
        conn.execute(text(f"KILL CONNECTION {int(session)}"))

    def holder(self) -> str | None:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                self.resolve(conn)
                owner = conn.execute(text("SELECT IS_USED_LOCK(:name)"),
                                     {"name": self.lock_name}).scalar()
                if owner is None:
                    return None
                row = conn.execute(
                    text("SELECT host, time FROM information_schema.processlist WHERE id = :id"),
                    {"id": owner},
                ).first()
        except Exception:
            return None
        if row is None:
            return f"connection {owner}"
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(row.time or 0))
        return f"connection {owner} from {row.host} since {since.isoformat(timespec='seconds')}"
