"""The lease: a database lock whose holder vanished is taken over within a bounded time.

A session lock (``pg_advisory_lock``, ``GET_LOCK``) lives as long as the
server keeps its session. When the holder's host disappears behind a silent
network cut (no FIN, no RST) the server keeps that session until TCP
keepalive gives up, about 2 h 11 min with Linux defaults, and every other
applier waits that long. The lease bounds it, with what the servers offer:

* on the lock's session, TCP keepalives and a user timeout on both ends
  (PostgreSQL ``tcp_keepalives_*``, ``tcp_user_timeout`` and
  ``client_connection_check_interval`` per session; the client's socket
  options as libpq's ``keepalives_*`` would set them), so a server that can
  bound its sessions ends the vanished holder's by itself;
* a heartbeat the holder writes into ``<ledger>_holder`` from a thread and a
  connection of its own, never blocked by the unit's statement; a waiter
  that finds it older than the holder's lease ends the holder's sessions
  (``pg_terminate_backend``, ``KILL CONNECTION``: both work for the same
  user). MySQL/MariaDB need it: their keepalive settings are global only.

Ending the session rolls back whatever the holder was doing, so the vanished
holder never records anything afterwards. The heartbeat also watches the
holder's side: when it cannot renew the lease, it shuts the lock
connection's socket, so the holder's statement fails at once instead of
waiting for its TCP stack, and nothing opens a connection that hangs.

A healthy holder keeps its lease however long a unit runs: keepalive probes
are answered by its kernel and the heartbeat runs beside the unit. The
database stays the only coordinator: times are the server's clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine

    from seedguard.locks.base import DatabaseLock

log = logging.getLogger(__name__)

# The socket options libpq sets for keepalives=1 / keepalives_* / tcp_user_timeout.
_TCP = getattr(socket, "IPPROTO_TCP", 6)
_OPTIONS = tuple(
    (level, getattr(socket, name), name)
    for level, name in ((socket.SOL_SOCKET, "SO_KEEPALIVE"), (_TCP, "TCP_KEEPIDLE"),
                        (_TCP, "TCP_KEEPINTVL"), (_TCP, "TCP_KEEPCNT"),
                        (_TCP, "TCP_USER_TIMEOUT"))
    if hasattr(socket, name)
)


@dataclass(frozen=True)
class Timings:
    """What a lease of ``seconds`` means for keepalives, timeouts and heartbeats.

    Keepalives declare a silent peer dead after ``idle + interval * count``
    (five sixths of the lease), so the server ends a vanished holder's
    session within the lease; the heartbeat renews five times per lease, so
    one late renewal is never mistaken for a vanished host.
    """

    seconds: float

    @property
    def idle(self) -> int:
        return max(1, int(self.seconds / 3))

    @property
    def interval(self) -> int:
        return max(1, int(self.seconds / 6))

    count = 3

    @property
    def user_timeout_ms(self) -> int:
        """Unacknowledged data for this long ends the connection (TCP_USER_TIMEOUT)."""
        return int((self.idle + self.interval * self.count) * 1000)

    @property
    def heartbeat_every(self) -> float:
        return self.seconds / 5

    @property
    def heartbeat_timeout_ms(self) -> int:
        """The heartbeat's own socket gives up sooner: it must notice a cut
        before a waiter may end the lock's session."""
        return max(1000, int(self.seconds * 1000 / 2))

    @property
    def connect_timeout(self) -> int:
        """Seconds a connection opened while the lease is held may take."""
        return max(2, math.ceil(self.seconds / 2))

    @property
    def check_interval_ms(self) -> int:
        """How often a busy PostgreSQL backend checks that its client is still there."""
        return max(1000, self.interval * 1000)


def _raw_socket(dbapi_connection: Any) -> socket.socket | None:
    """A duplicate of the driver's socket (close it at once), or None if it has none we can reach.

    pymysql keeps a socket object, psycopg and psycopg2 a descriptor
    (``fileno()``); an asyncio adapter wraps the driver's connection.
    """
    for candidate in (dbapi_connection, getattr(dbapi_connection, "_connection", None)):
        if candidate is None:
            continue
        sock = getattr(candidate, "_sock", None)
        try:
            if isinstance(sock, socket.socket):
                return socket.socket(fileno=os.dup(sock.fileno()))
            fileno = getattr(candidate, "fileno", None)
            if callable(fileno):
                return socket.socket(fileno=os.dup(int(fileno())))
        except (OSError, ValueError, TypeError):
            return None
    return None


def _tcp_socket(dbapi_connection: Any) -> socket.socket | None:
    sock = _raw_socket(dbapi_connection)
    if sock is None:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.close()  # a Unix socket: no network in between to lose
        return None
    return sock


def tune_socket(dbapi_connection: Any, *, idle: int, interval: int, count: int,
                user_timeout_ms: int) -> list[tuple[int, int, int]]:
    """Set keepalives and a user timeout on the connection's socket; the old values.

    Done on a duplicate descriptor closed right away: the options belong to
    the socket, and holding a duplicate would keep the connection open after
    the driver closes it.
    """
    sock = _tcp_socket(dbapi_connection)
    if sock is None:
        return []
    values = {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": interval,
              "TCP_KEEPCNT": count, "TCP_USER_TIMEOUT": user_timeout_ms}
    saved = []
    try:
        for level, option, name in _OPTIONS:
            saved.append((level, option, sock.getsockopt(level, option)))
            sock.setsockopt(level, option, values[name])
    except OSError as err:
        log.debug("could not set keepalives on the lock connection: %s", err)
    finally:
        sock.close()
    return saved


def restore_socket(dbapi_connection: Any, saved: list[tuple[int, int, int]]) -> None:
    """Put back what :func:`tune_socket` changed (the connection returns to the app's pool)."""
    if not saved:
        return
    sock = _tcp_socket(dbapi_connection)
    if sock is None:
        return
    try:
        for level, option, value in saved:
            sock.setsockopt(level, option, value)
    except OSError:
        pass
    finally:
        sock.close()


def cut_off(dbapi_connection: Any) -> None:
    """Shut the connection's socket down, so a statement blocked on it fails now.

    Used once the lease is lost: the server has ended, or is about to end,
    the session, and the holder's error should arrive within the lease rather
    than when its TCP stack gives up.
    """
    sock = _raw_socket(dbapi_connection)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def holder_table(lock: DatabaseLock) -> sa.Table | None:
    """``<ledger>_holder`` (created by the ledger's sg0004 revision), or None without a ledger."""
    import sqlalchemy as sa

    if lock.ledger is None:
        return None
    return sa.Table(
        f"{lock.ledger.table}_holder", sa.MetaData(),
        sa.Column("lock_key", sa.String(255), primary_key=True),
        sa.Column("session", sa.BigInteger),
        sa.Column("heartbeat_session", sa.BigInteger),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("since", sa.DateTime),
        sa.Column("heartbeat", sa.DateTime),
        sa.Column("lease", sa.Float),
        schema=lock.ledger.schema,
    )


@dataclass(frozen=True)
class HolderRow:
    """The holder row of a lock, with the heartbeat's age by the server's clock."""

    session: int
    heartbeat_session: int | None
    host: str | None
    pid: int | None
    since: dt.datetime | None
    heartbeat: dt.datetime | None
    lease: float
    age: float

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid, "since": _iso(self.since),
                "heartbeat": _iso(self.heartbeat)}

    def describe(self) -> str:
        return (f"pid {self.pid} on {self.host} (server session {self.session}), "
                f"lease renewed {self.age:.0f} s ago")


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc, microsecond=0).isoformat()


def read_holder(lock: DatabaseLock, conn: Connection) -> HolderRow | None:
    """The row of the lock's current holder, or None (no row, no ledger, or the
    row belongs to a session that no longer holds the lock)."""
    import sqlalchemy as sa

    table = holder_table(lock)
    if table is None or not lock.leased:
        return None
    age: sa.ColumnClause[Any] = sa.literal_column(lock.age_sql(f"{table.name}.heartbeat"))
    query = sa.select(table.c.session, table.c.heartbeat_session, table.c.host, table.c.pid,
                      table.c.since, table.c.heartbeat, table.c.lease, age.label("age")) \
        .where(table.c.lock_key == lock.resolve(conn))
    try:
        row = conn.execute(query).first()
        if row is None or lock.owner_session(conn) != row.session:
            return None
    except Exception:  # no holder table yet (a ledger behind sg0004), no privilege
        with contextlib.suppress(Exception):
            conn.rollback()
        return None
    return HolderRow(int(row.session), row.heartbeat_session, row.host, row.pid, row.since,
                     row.heartbeat, float(row.lease), float(row.age or 0.0))


def take_over_if_vanished(lock: DatabaseLock, conn: Connection) -> bool:
    """End the holder's sessions if it let its lease run out; True if it did.

    Only the session recorded as holding the lock, and only while it still
    holds it: a holder that released the lock (and a later one) is left alone.
    Runs in a transaction of its own on ``conn``, committed.
    """
    conn.rollback()
    holder = read_holder(lock, conn)
    if holder is None or holder.age <= holder.lease:
        conn.rollback()
        return False
    log.warning("the holder of the database lock %r, %s, let its %g s lease run out: its "
                "host is presumed gone (a network cut, a lost node); ending its server "
                "session so this applier can take over", lock.key, holder.describe(),
                holder.lease)
    for session in (holder.session, holder.heartbeat_session):
        if session is not None:
            try:
                lock.end_session(conn, int(session))
            except Exception as err:  # already gone, or not ours to end
                log.debug("could not end server session %s: %s", session, err)
                conn.rollback()
    table = holder_table(lock)
    assert table is not None
    with contextlib.suppress(Exception):
        conn.execute(table.delete().where(table.c.lock_key == lock.key,
                                          table.c.session == holder.session))
    conn.commit()
    return True


class Heartbeat:
    """Renews the holder's lease from a thread and a connection of its own.

    ``lost`` says why the lease was lost (None while it holds); then the
    lock's connection has been cut off so the holder stops at once.
    """

    def __init__(self, lock: DatabaseLock, session: int, timings: Timings,
                 lock_dbapi: Any) -> None:
        self.lock = lock
        self.session = session
        self.timings = timings
        self.lost: str | None = None
        self._lock_dbapi = lock_dbapi
        self._stop = threading.Event()
        self._first = threading.Event()
        self._written = False
        self._thread = threading.Thread(target=self._run, name="seedguard-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        """Start renewing; returns once the holder row is written (or could not be yet).

        Waiting for the first write closes the window in which a holder that
        vanished right after taking the lock would have left no row, and so
        nothing a waiter could judge by.
        """
        self._thread.start()
        self._first.wait(self.timings.seconds)

    def stop(self) -> None:
        """Stop renewing and delete the holder row (when the lease still holds)."""
        self._stop.set()
        self._thread.join(self.timings.seconds)

    def _run(self) -> None:
        from seedguard.verify import seedguard_code

        # Threads do not inherit context variables: mark this one as
        # seedguard's own, or its writes during a unit would be refused as
        # writes around the unit (seedguard.verify watches every engine).
        with seedguard_code():
            self._beat()

    def _beat(self) -> None:
        from sqlalchemy.engine import Engine
        from sqlalchemy.exc import DBAPIError

        table = holder_table(self.lock)
        if table is None:
            return
        timings = self.timings
        # A pool of its own, made like the application's (same creator, so the
        # same connect arguments, and the same pool events): a heartbeat taken
        # from the application's pool would wait for, or be refused, a
        # connection by a small pool (pool_size=1, max_overflow=0), and lose
        # a lease that was never at risk. Within shared_heartbeats() that pool
        # is one for every lock on the application's pool, kept for the next.
        source = self.lock.engine
        shared = _shared_pool(source)
        engine = shared or Engine(source.pool.recreate(), source.dialect, source.url)
        try:
            conn = engine.connect()
        except Exception as err:
            self._lose(f"the heartbeat could not connect ({type(err).__name__})")
            self._first.set()
            if shared is None:
                engine.dispose()
            return
        try:
            own_session = self._prepare(conn)
            while not self._stop.is_set():
                wait = timings.heartbeat_every
                try:
                    if not self._renew(conn, table, own_session):
                        self._lose("another applier ended this holder's lease (its heartbeat "
                                   "was seen older than the lease)")
                        return
                except DBAPIError as err:
                    if err.connection_invalidated or self._is_disconnect(conn, err):
                        self._lose("the heartbeat's connection failed "
                                   f"({type(err).__name__}); the network to the server is "
                                   "probably cut")
                        return
                    # No holder table yet: the ledger is being created or
                    # upgraded on the lock's connection right now.
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    wait = min(wait, 0.5)
                self._first.set()
                self._stop.wait(wait)
            if self._written:
                conn.execute(table.delete().where(table.c.lock_key == self.lock.key,
                                                  table.c.session == self.session))
                conn.commit()
        except Exception as err:
            if not self._stop.is_set():
                self._lose(f"the heartbeat failed ({type(err).__name__})")
            else:
                log.debug("could not delete the holder row: %s", err)
        finally:
            self._first.set()
            if self.lost is not None:
                with contextlib.suppress(Exception):
                    conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()
            if shared is None:
                engine.dispose()

    def _prepare(self, conn: Connection) -> int:
        """Make ``conn``'s session fit to renew the lease; its server session id.

        A connection of a shared pool (:func:`shared_heartbeats`) was made so
        by the heartbeat before it, for the same lease: what was set on the
        session and the socket is still set, and its id is remembered.
        """
        from sqlalchemy.exc import DBAPIError

        timings = self.timings
        prepared = conn.info.get(_PREPARED)
        if prepared is not None and prepared[0] == timings.seconds:
            return int(prepared[1])
        # Between two beats this session idles for a fifth of the lease: a
        # role's or database's idle limit (idle_session_timeout,
        # wait_timeout) would end it, and the lease with it.
        lifted = True
        try:
            self.lock.lift_session_limits(conn)
        except DBAPIError as err:
            log.info("could not lift the server's idle limits on the heartbeat's "
                     "session: %s", type(err.orig).__name__)
            conn.rollback()
            lifted = False
        # Its own socket gives up sooner than the lock's: the heartbeat must
        # notice a cut before any waiter may end the lock's session.
        tune_socket(conn.connection.dbapi_connection, idle=timings.interval,
                    interval=1, count=3, user_timeout_ms=timings.heartbeat_timeout_ms)
        own_session = self.lock.session_id(conn)
        conn.commit()
        if lifted:
            conn.info[_PREPARED] = (timings.seconds, own_session)
        return own_session

    def _renew(self, conn: Connection, table: sa.Table, own_session: int) -> bool:
        import sqlalchemy as sa

        from seedguard.locks.deadline import holder_record

        now: sa.ColumnClause[Any] = sa.literal_column(self.lock.utc_now_sql)
        key = self.lock.key
        if not self._written:
            record = holder_record()
            conn.execute(table.delete().where(table.c.lock_key == key))
            conn.execute(table.insert().values(
                lock_key=key, session=self.session, heartbeat_session=own_session,
                host=str(record["host"])[:255], pid=record["pid"], since=now, heartbeat=now,
                lease=self.timings.seconds))
            conn.commit()
            self._written = True
            return True
        renewed = conn.execute(table.update().where(
            table.c.lock_key == key, table.c.session == self.session).values(heartbeat=now))
        conn.commit()
        return renewed.rowcount == 1

    @staticmethod
    def _is_disconnect(conn: Connection, err: Exception) -> bool:
        orig = getattr(err, "orig", None)
        try:
            return bool(conn.dialect.is_disconnect(orig, None, None))  # type: ignore[arg-type]
        except Exception:
            return False

    def _lose(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self.lost = reason
        log.error("lost the lease on the database lock %r: %s; stopping this applier's "
                  "work (the server ends its session, so nothing of the current unit is "
                  "recorded)", self.lock.key, reason)
        cut_off(self._lock_dbapi)


# In a heartbeat connection's info: the lease (seconds) its session and socket
# were made fit for, and its server session id (a shared pool's next heartbeat
# finds them there).
_PREPARED = "seedguard.heartbeat.prepared"
# The heartbeat pool shared by every lock on one application pool, by that pool's id.
_SHARED_POOLS: dict[int, Engine] = {}
_SHARING = threading.Lock()


@contextlib.contextmanager
def shared_heartbeats(engine: Engine, *, at_once: int) -> Iterator[None]:
    """Within it, the heartbeats of locks taken on ``engine``'s pool share one pool.

    A heartbeat otherwise opens a connection of its own for each lock taken
    and closes it at release: a new server process per lock on PostgreSQL,
    the largest single cost of applying to one schema of a fleet after
    another (``apply_each``). Shared, the connection of one lock's heartbeat
    serves the next; each heartbeat still runs on a thread and a session of
    its own, beside its lock's, as before. Only a ``QueuePool`` that keeps
    ``at_once`` connections (the most heartbeats that run at once) is
    shared, so no heartbeat ever waits for another's connection; other
    pools keep a pool per heartbeat. The shared pool is disposed of at the end.

    :param engine: the engine whose locks' heartbeats share a pool (its
        ``execution_options`` copies, one per schema, share its pool too).
    :param at_once: how many locks may be held at once on it.
    """
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import QueuePool

    pool = engine.pool
    if not isinstance(pool, QueuePool) or pool.size() < at_once:
        yield
        return
    with _SHARING:
        if id(pool) in _SHARED_POOLS:  # already shared by an outer call
            heartbeats = None
        else:
            # A small statement cache: the holder row's statements name each
            # schema, so a fleet's would fill a default one with statements
            # that are never asked for again.
            heartbeats = Engine(pool.recreate(), engine.dialect, engine.url,
                                query_cache_size=50)
            _SHARED_POOLS[id(pool)] = heartbeats
    try:
        yield
    finally:
        if heartbeats is not None:
            with _SHARING:
                del _SHARED_POOLS[id(pool)]
            heartbeats.dispose()


def _shared_pool(engine: Engine) -> Engine | None:
    with _SHARING:
        return _SHARED_POOLS.get(id(engine.pool))
