"""The two locks that serialise appliers: a file lock per host, a database lock across hosts.

Both are released by the operating system or the database server when their
holder dies (the file lock is an ``flock`` on an open descriptor; the database
locks belong to a session), so a killed applier never leaves a stale lock.
Every wait is bounded by one :class:`Deadline` and ends in :class:`LockTimeout`
naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from seedguard.connect import safe_url
from seedguard.errors import ConfigError, LockTimeout, SeedguardError

if TYPE_CHECKING:
    import filelock
    from sqlalchemy.engine import URL, Connection, Engine

    from seedguard.config import Settings

log = logging.getLogger(__name__)

# filelock polls a non-blocking flock; its 50 ms default would add up to 50 ms
# per hand-over, which dominates a contended start-up (bench/contention.py).
FILE_LOCK_POLL_SECONDS = 0.005


class Deadline:
    """One time budget shared by every wait of an operation; ``None`` waits forever."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())


def holder_record() -> dict[str, object]:
    """Who we are, for the message another applier shows when it times out."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe_holder(record: dict[str, object] | None) -> str:
    if not record:
        return "an unknown holder"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"


# -- the file lock ---------------------------------------------------------------


def default_lock_path(url: URL) -> Path:
    """Beside a SQLite database file, else in a private temp dir keyed by the URL.

    The key hashes the URL without its password, so changing a password does
    not split the lock, and no password reaches the file system.
    """
    database = str(url.database or "")
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") \
            and not database.startswith("file:"):
        path = Path(database).resolve()
        return path.with_name(path.name + ".seedguard.lock")
    key = hashlib.sha256(safe_url(url.set(password=None)).encode()).hexdigest()[:20]
    return private_lock_dir() / f"{key}.lock"


def private_lock_dir() -> Path:
    """``$TMPDIR/seedguard-<uid>``, created 0700 and refused if anyone else owns it.

    A world-writable shared directory would let another account create (and
    hold forever) the lock file every user's applier waits on.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(tempfile.gettempdir()) / f"seedguard-{uid}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
    except OSError as err:
        raise ConfigError(f"cannot create lock directory {directory}: {err.strerror}; "
                          "set SEEDGUARD_LOCK_PATH or lock_path=") from err
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise ConfigError(
            f"lock directory {directory} is not a directory owned by you; remove it or set "
            "SEEDGUARD_LOCK_PATH / lock_path= to a path of your own"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        # Ours but opened up (made by an older release, or by hand under a
        # permissive umask): close it, so no other account can plant or hold
        # a lock file in it (issue 6).
        try:
            directory.chmod(0o700)
        except OSError as err:
            raise ConfigError(f"lock directory {directory} is accessible to other users and "
                              f"cannot be made private: {err.strerror}; set "
                              "SEEDGUARD_LOCK_PATH or lock_path=") from err
    return directory


class FileLock:
    """An exclusive ``filelock.FileLock`` with a holder record written beside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self._lock: object | None = None

    def acquire(self, deadline: Deadline) -> None:
        import filelock

        self._check_path()
        timeout = deadline.remaining()
        lock = filelock.FileLock(str(self.path), timeout=-1 if timeout is None else timeout)
        # Under apply_async() the wait must not block the event loop: poll, and
        # sleep between polls on the loop (seedguard.aio.loop_sleep).
        from seedguard.aio import loop_sleep

        sleep = loop_sleep()
        try:
            if sleep is None:
                lock.acquire(poll_interval=FILE_LOCK_POLL_SECONDS)
            else:
                _acquire_polling(lock, deadline, sleep)
        except filelock.Timeout as err:
            holder = describe_holder(self._read_holder())
            raise LockTimeout(
                f"timed out after {deadline.seconds or 0:g} s waiting for the file lock "
                f"{self.path}, held by {holder}; wait for it to finish or raise lock_timeout",
                lock=str(self.path), holder=holder,
            ) from err
        except OSError as err:
            raise ConfigError(
                f"cannot create the lock file {self.path}: {err.strerror or err}; make its "
                "directory writable or set SEEDGUARD_LOCK_PATH / lock_path= elsewhere"
            ) from err
        self._lock = lock
        self._write_holder()

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        with contextlib.suppress(OSError):
            self.holder_path.unlink()
        lock.release()  # type: ignore[attr-defined]

    def holder(self) -> dict[str, object] | None:
        """The current holder's record, if the lock is held (by anyone, including us)."""
        import filelock

        if not self.path.exists():
            return None
        probe = filelock.FileLock(str(self.path), timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            return self._read_holder() or {}
        except OSError:
            return None
        probe.release()
        return None

    def _check_path(self) -> None:
        # Refuse, do not follow, a symlink: it could point the lock (which
        # filelock opens for writing) at any file the user can write.
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        except OSError as err:
            raise ConfigError(
                f"cannot create the lock file {self.path}: {err.strerror}; make its directory "
                "writable or set SEEDGUARD_LOCK_PATH / lock_path= elsewhere"
            ) from err
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"lock path {self.path} is not a regular file; refusing to use it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise ConfigError(
                f"lock file {self.path} belongs to another user (uid {info.st_uid}); "
                "refusing to use it: set SEEDGUARD_LOCK_PATH / lock_path= to a path of your own"
            )

    def _write_holder(self) -> None:
        tmp = self.holder_path.with_name(self.holder_path.name + f".{os.getpid()}")
        try:
            tmp.write_text(json.dumps(holder_record()))
            os.replace(tmp, self.holder_path)
        except OSError as err:  # the record is a courtesy; the lock is what matters
            log.debug("could not write lock holder record %s: %s", self.holder_path, err)

    def _read_holder(self) -> dict[str, object] | None:
        try:
            record = json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None


def _acquire_polling(lock: filelock.FileLock, deadline: Deadline,
                     sleep: Callable[[float], None]) -> None:
    """filelock's wait (filelock.Timeout at the deadline), sleeping with ``sleep``."""
    import filelock

    while True:
        try:
            lock.acquire(blocking=False)
            return
        except filelock.Timeout:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise
            sleep(FILE_LOCK_POLL_SECONDS if remaining is None
                  else min(FILE_LOCK_POLL_SECONDS, remaining))


# -- database locks ----------------------------------------------------------------


class DatabaseLock:
    """A lock held by one database session, chosen by dialect from ``DATABASE_LOCKS``.

    ``acquire`` opens a dedicated connection and takes the lock there; the
    server drops it if this process dies. ``verify`` is called before each
    unit so a lost lock connection stops the run instead of leaving it
    unprotected.
    """

    dialects: ClassVar[tuple[str, ...]] = ()
    # True for a lock taken per unit transaction (lock_unit) rather than per run.
    per_transaction: ClassVar[bool] = False

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self.conn: Connection | None = None

    def acquire(self, deadline: Deadline) -> None:
        raise NotImplementedError

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            self._release(conn)
        finally:
            conn.close()

    def verify(self) -> None:
        """Raise if the lock was lost (its connection died)."""

    def lock_unit(self, conn: Connection, deadline: Deadline) -> None:
        """Take a lock that lasts for ``conn``'s current transaction (issue 6).

        Only the transaction-level mode (PgBouncer) does anything here; the
        session locks are already held for the whole run.
        """

    @property
    def work_connection(self) -> Connection | None:
        """The connection units may run on, if the lock lives on one (issue 6).

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

    def _release(self, conn: Connection) -> None:
        pass

    def _lost(self, err: Exception) -> SeedguardError:
        return SeedguardError(
            f"lost the database lock {self.key!r} (its connection failed: "
            f"{type(err).__name__}); stopped before the next unit so no unit runs "
            "unprotected; run again to continue"
        )

    def _timeout(self, deadline: Deadline, cause: Exception | None = None) -> LockTimeout:
        holder = self.holder() or "an unknown holder"
        return LockTimeout(
            f"timed out after {deadline.seconds or 0:g} s waiting for the database lock "
            f"{self.key!r}, held by {holder}; wait for it to finish or raise lock_timeout",
            lock=self.key, holder=holder,
        )


class NoDatabaseLock(DatabaseLock):
    """SQLite: one file, one host; the file lock beside it serialises everyone."""

    dialects = ("sqlite",)

    def acquire(self, deadline: Deadline) -> None:
        pass


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
            # Back to the session's own setting (units now run on this session,
            # issue 6), not to 0: a lock_timeout the application configured stays.
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


_YEAR = 365 * 24 * 3600
# How many transactions to try to get back to the lock's own server session
# when a transaction pooler sits in between (see PostgresSessionLock._release).
_UNLOCK_TRIES = 64


class MySQLLock(DatabaseLock):
    """``GET_LOCK`` on a dedicated session (MySQL and MariaDB)."""

    dialects = ("mysql", "mariadb")

    @property
    def lock_name(self) -> str:
        # GET_LOCK names are server-wide and at most 64 characters.
        return "seedguard:" + hashlib.sha256(self.key.encode()).hexdigest()[:40]

    def acquire(self, deadline: Deadline) -> None:
        from sqlalchemy import text

        from seedguard.connect import connection_errors

        with connection_errors(self.engine):
            conn = self.engine.connect()
        try:
            remaining = deadline.remaining()
            # GET_LOCK takes whole seconds (fractions are truncated on MySQL).
            # MariaDB answers NULL to the "negative waits forever" of MySQL, so
            # "forever" is a year.
            seconds = _YEAR if remaining is None else max(0, int(remaining + 0.999))
            got = conn.execute(text("SELECT GET_LOCK(:name, :timeout)"),
                               {"name": self.lock_name, "timeout": seconds}).scalar()
            conn.commit()
            if got != 1:
                raise self._timeout(deadline)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _release(self, conn: Connection) -> None:
        from sqlalchemy import text

        with contextlib.suppress(Exception):
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})
            conn.commit()

    def verify(self) -> None:
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

    def holder(self) -> str | None:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
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


DATABASE_LOCKS: dict[str, type[DatabaseLock]] = {
    dialect: cls
    for cls in (NoDatabaseLock, PostgresSessionLock, MySQLLock)
    for dialect in cls.dialects
}

TRANSACTION_LOCKS: dict[str, type[DatabaseLock]] = {
    dialect: cls for cls in (PostgresTransactionLock,) for dialect in cls.dialects
}
"""``lock_mode="transaction"``: only PostgreSQL has transaction-scoped advisory locks."""


def database_lock(engine: Engine, key: str, mode: str = "session") -> DatabaseLock:
    """The database lock for ``engine``'s dialect and ``mode`` ("session" or "transaction")."""
    locks = TRANSACTION_LOCKS if mode == "transaction" else DATABASE_LOCKS
    cls = locks.get(engine.dialect.name)
    if cls is None:
        if mode == "transaction":
            raise ConfigError(
                f"lock_mode=\"transaction\" is for PostgreSQL behind a transaction-pooling "
                f"proxy such as PgBouncer; {engine.dialect.name!r} has no transaction-level "
                "lock: use the default lock_mode=\"session\""
            )
        raise ConfigError(
            f"seedguard has no database lock for {engine.dialect.name!r}; supported: "
            f"{', '.join(sorted(DATABASE_LOCKS))}"
        )
    return cls(engine, key)


def lock_key(engine: Engine, ledger_name: str, schema: str | None) -> str:
    """The database lock's key: database, schema and ledger table.

    MySQL's GET_LOCK names are server-wide, so the database is part of the key.
    """
    database = engine.url.database or ""
    return f"{database}.{schema or ''}.{ledger_name}"


def ledger_locks(engine: Engine, settings: Settings) -> tuple[FileLock, DatabaseLock, Deadline]:
    """The two locks every writer of ``settings``' ledger takes, and the one deadline
    bounding both waits: apply() and the ledger commands (stamp, forget, resolve)."""
    file_lock = FileLock(settings.lock_path or default_lock_path(engine.url))
    key = lock_key(engine, settings.ledger_table, settings.ledger_schema)
    db_lock = database_lock(engine, key, settings.lock_mode)
    return file_lock, db_lock, Deadline(settings.lock_timeout)


@contextlib.contextmanager
def both_locks(file_lock: FileLock, db_lock: DatabaseLock, deadline: Deadline, *,
               skip_if: Callable[[], bool] | None = None) -> Iterator[bool]:
    """Hold the file lock, then the database lock; release in reverse order.

    ``skip_if`` runs under the file lock alone: when it answers True the
    database lock is not taken and the body gets False (nothing to do).
    """
    file_lock.acquire(deadline)
    try:
        if skip_if is not None and skip_if():
            yield False
            return
        db_lock.acquire(deadline)
        try:
            yield True
        finally:
            db_lock.release()
    finally:
        file_lock.release()
