"""Verification: the unit's work is still in the one transaction it opened.

The guard (:mod:`seedguard.guard`) reads SQL text and refuses the spellings
it knows early, with a friendly message. SQL has too many ways to end a
transaction (a raw DB-API ``commit()``, a multi-statement string, a prepared
statement, a procedure that commits), and threads and raw connections never
pass through the reader at all, so the guarantee rests on this module instead:

- **The canary.** Right after a unit's ledger row is claimed, a SAVEPOINT with
  a random name is set on the unit's DB-API connection. Every way of ending
  a transaction (``COMMIT``, ``ROLLBACK``, an implicit commit, ``SET
  autocommit``) destroys its savepoints, and a new transaction cannot have
  it. Before the unit commits, ``RELEASE SAVEPOINT`` (inside a probe
  savepoint, so a failure leaves the transaction usable on PostgreSQL) says
  whether the transaction is still the one the unit began; before a failed
  unit is rolled back, ``ROLLBACK TO SAVEPOINT`` says the same, and also
  works in PostgreSQL's aborted-transaction state. Statements go straight
  to the DB-API cursor: no SQLAlchemy event, no guard, no bookkeeping of
  SQLAlchemy's to disturb. It needs no privileges and works the same on
  SQLite, PostgreSQL and MySQL/MariaDB.
- **Every engine of the process.** While a unit runs, class-level listeners
  on :class:`~sqlalchemy.engine.Engine` and :class:`~sqlalchemy.pool.Pool`
  watch every engine of the process, not only the one seedguard was given
  (an app's module-level engine, a worker thread's ``scoped_session``,
  Flask-SQLAlchemy's ``db.session`` in another app context): a write to the
  unit's database on any other connection is refused before it runs
  (:class:`~seedguard.errors.UnitEscape`, and the unit fails), and a
  connection checked out of any pool for that database is made read-only at
  the database until it is checked in again, so writes through
  ``engine.raw_connection()`` or a raw DB-API cursor, which no SQLAlchemy
  event sees, are refused by the server itself. Reads stay allowed, and
  other databases are not touched. Which database a DB-API connection is
  on is asked of the driver (host, port, database; SQLite's file).
- **The app's other binds.** In a Flask app with Flask-SQLAlchemy binds, a
  write from the unit's own context on a connection of another bind's
  engine (``db.engines["audit"].connect()``) goes to another database than
  the unit's, outside its transaction: it is refused before it runs, naming
  the bind (:mod:`seedguard.binds`), and a connection the unit's code checks
  out of that bind's pool is read-only at its database until checked in
  (a raw DB-API write is refused by the server). Other threads may write there.

seedguard's own connections are exempt: everything seedguard runs is marked
(:func:`seedguard_code`), except the unit's own function (:func:`user_code`).
A thread seedguard starts itself must mark its work with
:func:`seedguard_code`, since threads do not inherit context variables.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import secrets
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from seedguard.bydialect import ByDialect, Registry
from seedguard.errors import DefinitionError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.binds import Routing
    from seedguard.guard import _Scope
    from seedguard.unit import SeedUnit

log = logging.getLogger(__name__)

# True while seedguard's own code runs in this context; False inside a unit's function.
_seedguard: ContextVar[bool] = ContextVar("seedguard_own_code", default=False)


@contextlib.contextmanager
def seedguard_code() -> Iterator[None]:
    """Mark what runs in this block as seedguard's own (its connections are exempt)."""
    token = _seedguard.set(True)
    try:
        yield
    finally:
        _seedguard.reset(token)


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """Mark what runs in this block as a unit's own code (watched like any other)."""
    token = _seedguard.set(False)
    try:
        yield
    finally:
        _seedguard.reset(token)


# -- per-database probes ------------------------------------------------------------------


PROBES: Registry[Probe] = Registry("transaction probe")
"""The :class:`Probe` class of each dialect."""

_BY_DRIVER: Registry[Probe] = Registry("transaction probe")
"""The same classes by DB-API driver package: the pool's listeners see a DB-API
connection, not a dialect (``psycopg``, ``pymysql``, ``sqlite3``)."""


class Probe(ByDialect):
    """What seedguard needs to know and set on one kind of DB-API connection.

    A subclass lists its ``dialects`` and the ``drivers`` (top-level package
    of the DB-API connection's class) it knows; the base class knows nothing.
    """

    registry = PROBES
    drivers: ClassVar[tuple[str, ...]] = ()
    # Whether a rollback also undoes what :meth:`where` reports (PostgreSQL's SET).
    where_rolls_back: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "drivers" in cls.__dict__:
            for driver in cls.drivers:
                _BY_DRIVER.add(driver, cls)

    def identity(self, dbapi_connection: Any) -> tuple[Any, ...] | None:
        """Which database ``dbapi_connection`` is on; None when that cannot be told."""
        return None

    def read_only(self, dbapi_connection: Any, on: bool) -> None:
        """Make the session refuse writes (``on``), or undo that."""

    def restore(self, dbapi_connection: Any) -> None:
        """Undo what a unit may have changed on the session that would end the next
        unit's transaction early (MySQL's ``SET autocommit``)."""

    def where(self, dbapi_connection: Any) -> Any:
        """Where unqualified names resolve now (``search_path``, the current database)."""
        return None

    def back_to(self, dbapi_connection: Any, where: Any) -> None:
        """Resolve unqualified names as at :meth:`where` again (the ledger's writes)."""


def _execute(dbapi_connection: Any, *statements: str) -> list[Any]:
    cursor = dbapi_connection.cursor()
    try:
        rows: list[Any] = []
        for statement in statements:
            cursor.execute(statement)
            if cursor.description is not None:
                rows = list(cursor.fetchall())
        return rows
    finally:
        cursor.close()


class SQLiteProbe(Probe):
    dialects = ("sqlite",)
    drivers = ("sqlite3", "pysqlite2", "sqlcipher3")

    def identity(self, dbapi_connection: Any) -> tuple[Any, ...] | None:
        rows = _execute(dbapi_connection, "PRAGMA database_list")
        path = next((row[2] for row in rows if row[1] == "main"), "")
        # In memory: one connection per database, guarded by the pool check.
        return ("sqlite", os.path.realpath(path)) if path else None

    def read_only(self, dbapi_connection: Any, on: bool) -> None:
        _execute(dbapi_connection, f"PRAGMA query_only = {1 if on else 0}")


class PostgresProbe(Probe):
    dialects = ("postgresql",)
    drivers = ("psycopg", "psycopg2")

    def identity(self, dbapi_connection: Any) -> tuple[Any, ...] | None:
        info = dbapi_connection.info
        return ("postgresql", info.host, int(info.port), info.dbname)

    def read_only(self, dbapi_connection: Any, on: bool) -> None:
        # Session-level, so every later transaction on it is read-only; RESET
        # restores what the role or database sets, not a guess.
        statement = ("SET default_transaction_read_only = on" if on
                     else "RESET default_transaction_read_only")
        _execute(dbapi_connection, statement)
        dbapi_connection.commit()

    def where(self, dbapi_connection: Any) -> Any:
        return _execute(dbapi_connection, "SHOW search_path")[0][0]

    def back_to(self, dbapi_connection: Any, where: Any) -> None:
        quoted = str(where).replace("'", "''")
        # Not local to the transaction: a unit's session-wide SET commits with it.
        _execute(dbapi_connection, f"SELECT set_config('search_path', '{quoted}', false)")


class MySQLProbe(Probe):
    dialects = ("mysql", "mariadb")
    drivers = ("pymysql", "MySQLdb")
    where_rolls_back = False

    def identity(self, dbapi_connection: Any) -> tuple[Any, ...] | None:
        database = dbapi_connection.db
        if isinstance(database, bytes):
            database = database.decode()
        return ("mysql", dbapi_connection.host, int(dbapi_connection.port), database)

    def read_only(self, dbapi_connection: Any, on: bool) -> None:
        _execute(dbapi_connection,
                 f"SET SESSION TRANSACTION {'READ ONLY' if on else 'READ WRITE'}")
        dbapi_connection.commit()

    def restore(self, dbapi_connection: Any) -> None:
        # `SET autocommit = @x` and its many spellings change the server's
        # session; the driver reads the flag back from the server's status.
        get = getattr(dbapi_connection, "get_autocommit", None)
        if callable(get) and get():
            dbapi_connection.autocommit(False)

    def where(self, dbapi_connection: Any) -> Any:
        return _execute(dbapi_connection, "SELECT DATABASE()")[0][0]

    def back_to(self, dbapi_connection: Any, where: Any) -> None:
        if where is not None:  # USE is not transactional: undone by hand, also after a rollback
            _execute(dbapi_connection, "USE `{}`".format(str(where).replace("`", "``")))


# Probes are stateless: one instance per class serves every connection.
_INSTANCES: dict[type[Probe], Probe] = {}


def probe_for(dbapi_connection: Any) -> Probe:
    """The probe for ``dbapi_connection``'s driver (one that knows nothing if unknown)."""
    package = type(dbapi_connection).__module__.partition(".")[0]
    cls = _BY_DRIVER.get(package) or Probe
    found = _INSTANCES.get(cls)
    if found is None:
        found = _INSTANCES.setdefault(cls, cls())
    return found


def identity(dbapi_connection: Any, info: dict[Any, Any] | None = None) -> tuple[Any, ...] | None:
    """Which database ``dbapi_connection`` is on, cached in its pool record's ``info``."""
    if info is not None:
        cached = info.get("seedguard_identity")
        if cached is not None and cached[0] is dbapi_connection:
            return cached[1]  # type: ignore[no-any-return]
    try:
        found = probe_for(dbapi_connection).identity(dbapi_connection)
    except Exception as err:  # a closed or broken connection: nothing to protect there
        log.debug("cannot tell the database of a connection: %s", type(err).__name__)
        return None
    if info is not None:
        info["seedguard_identity"] = (dbapi_connection, found)
    return found


# -- the canary ---------------------------------------------------------------------------


class Canary:
    """A savepoint set right after the unit's claim; its survival proves one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.dbapi_connection: Any = conn.connection.dbapi_connection
        self.name = f"seedguard_canary_{secrets.token_hex(6)}"
        self.probe = probe_for(self.dbapi_connection)
        self.where: Any = None

    def plant(self) -> None:
        _execute(self.dbapi_connection, f"SAVEPOINT {self.name}")
        # Where the ledger is: `SET search_path` or `USE` in the unit must not
        # redirect its ledger row to another schema or database.
        self.where = self.probe.where(self.dbapi_connection)

    def back_home_after_rollback(self) -> None:
        """After a rollback: undo a ``USE`` (a rollback undoes PostgreSQL's ``SET``)."""
        if not self.probe.where_rolls_back:
            with contextlib.suppress(Exception):
                self.back_home()

    def back_home(self) -> None:
        """Point unqualified names where they pointed before the unit (the ledger's
        writes); a failure says which setting the unit changed."""
        if self.where is None:
            return
        try:
            self.probe.back_to(self.dbapi_connection, self.where)
        except Exception as err:
            from seedguard.errors import SeedguardError

            raise SeedguardError(
                "the unit changed where unqualified names resolve (SET search_path / USE) "
                f"and seedguard could not set it back to {self.where!r} for the ledger "
                f"write: {type(err).__name__}: {err}"
            ) from err

    def intact(self) -> bool:
        """Before the commit: is the transaction still the one the canary was set in?

        Leaves that transaction (or the one the unit opened after ending it)
        open and usable either way.
        """
        probe = f"{self.name}_probe"
        try:
            _execute(self.dbapi_connection, f"SAVEPOINT {probe}")
        except Exception:
            return False
        try:
            # Releases the canary and the probe set inside it.
            _execute(self.dbapi_connection, f"RELEASE SAVEPOINT {self.name}")
            return True
        except Exception:
            pass
        # No canary: the transaction was ended mid-way. PostgreSQL has now
        # aborted the new one; back to the probe makes it usable again.
        with contextlib.suppress(Exception):
            _execute(self.dbapi_connection, f"ROLLBACK TO SAVEPOINT {probe}",
                     f"RELEASE SAVEPOINT {probe}")
        return False

    def lost(self, conn: Connection) -> bool:
        """Whether ``conn`` now has another DB-API connection than the canary's (the
        first was lost, and the server discarded its open transaction)."""
        try:
            return conn.connection.dbapi_connection is not self.dbapi_connection
        except Exception:
            return True

    def rolled_back(self) -> bool:
        """Before a failed unit's rollback: undo everything since the canary; whether that
        was its own transaction (so the rollback that follows leaves nothing behind)."""
        try:
            _execute(self.dbapi_connection, f"ROLLBACK TO SAVEPOINT {self.name}")
            return True
        except Exception as err:
            log.debug("canary savepoint is gone: %s", type(err).__name__)
            return False


def restore_session(conn: Connection) -> None:
    """After a unit: undo session changes that would end the next unit's transaction."""
    with contextlib.suppress(Exception):
        dbapi_connection = conn.connection.dbapi_connection
        probe_for(dbapi_connection).restore(dbapi_connection)


# -- a unit's work must be a unit's work ---------------------------------------------------


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def check_function(name: str, fn: Any) -> None:
    """Refuse at declaration a function whose call does no work: a generator function."""
    # Asked once per declared unit at every start: a plain function's code
    # flags answer directly (what inspect.isgeneratorfunction reads after
    # unwrapping partials and methods, which only other callables need).
    if type(fn) is types.FunctionType:
        generator = bool(fn.__code__.co_flags & _GENERATOR_FLAGS)
    else:
        generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if generator:
        raise DefinitionError(
            f"unit {name!r}: {getattr(fn, '__qualname__', fn)!r} is a generator function "
            "(it contains `yield`), so calling it runs none of its body; remove the "
            "yield, or move the work into a plain function"
        )


def check_outcome(unit: SeedUnit, outcome: Any) -> None:
    """Refuse, before anything is recorded, a unit whose call returned unstarted work."""
    if inspect.isgenerator(outcome) or inspect.isasyncgen(outcome):
        if inspect.isgenerator(outcome):
            outcome.close()
        raise DefinitionError(
            f"unit {unit.name!r} returned a generator: its work never ran. Remove the "
            "`yield`, or have the unit do its work before it returns"
        )
    if inspect.iscoroutine(outcome):
        outcome.close()  # never awaited: without close() Python warns at exit
        raise DefinitionError(
            f"unit {unit.name!r} returned a coroutine that was never awaited: its work never "
            "ran. Declare it `async def` and apply it with `await seedguard.apply_async(...)`"
        )
    if inspect.isawaitable(outcome):
        raise DefinitionError(
            f"unit {unit.name!r} returned an awaitable ({type(outcome).__name__}) that was "
            "never awaited: its work may not have run. Await it inside an `async def` unit "
            "applied with `await seedguard.apply_async(...)`"
        )


# -- sessions the server ends ---------------------------------------------------------------

# SQLSTATE / error number -> the server setting that ends a session or statement.
_ENDED_BY = {
    "57P05": "idle_session_timeout",  # PostgreSQL 14+
    "25P03": "idle_in_transaction_session_timeout",
    "57014": "statement_timeout",
    "55P03": "lock_timeout",
    1969: "max_statement_time",  # MariaDB ER_STATEMENT_TIMEOUT
    2006: "wait_timeout",  # MySQL server has gone away (an idle session ended)
    2013: "wait_timeout",  # lost connection during query
    4031: "wait_timeout",  # MySQL 8: disconnected by the server because of inactivity
}
_SETTING_FIX = {
    "max_statement_time": "SET GLOBAL/ALTER USER ... max_statement_time = 0",
    "wait_timeout": "a longer wait_timeout for the user seedguard connects as",
}

F = TypeVar("F", bound=Callable[..., Any])


def session_setting(err: BaseException) -> str | None:
    """The server setting that ended the statement or session behind ``err``, if known."""
    orig = getattr(err, "orig", None) or err
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None),
                                                       "sqlstate", None)
    if code is None and getattr(orig, "args", None):
        code = orig.args[0]
    setting = _ENDED_BY.get(code)
    if setting == "statement_timeout" and "user request" in str(orig):
        return None  # pg_cancel_backend, Ctrl-C in psql: the same SQLSTATE, no setting
    if setting is None and "idle-session timeout" in str(orig).lower():
        setting = "idle_session_timeout"
    return setting


def limit_hint(err: BaseException) -> str:
    """For a unit's failure: which server setting ended its statement or session, when
    the driver's own message does not name it (PostgreSQL says "statement timeout")."""
    setting = session_setting(err)
    if setting is None or setting in str(getattr(err, "orig", None) or err):
        return ""
    return (f" (the server's {setting}, set for the role, the database or the server, "
            "ended it)")


def translate_session_errors(fn: F) -> F:
    """Raise a SeedguardError naming the server setting when the server ends one of
    seedguard's own statements or sessions (a role's or database's limit)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import DBAPIError

        from seedguard.errors import SeedguardError

        try:
            return fn(*args, **kwargs)
        except DBAPIError as err:
            setting = session_setting(err)
            if setting is None:
                raise
            fix = _SETTING_FIX.get(setting, f"ALTER ROLE <user> SET {setting} = 0")
            raise SeedguardError(
                f"the database server ended seedguard's session or statement ({setting}, "
                f"set for the role, the database or the server: {type(err.orig).__name__})"
                f"; lift it for the user seedguard connects as ({fix}), or give your "
                "engine pool_pre_ping=True so a connection the server closed while idle "
                "in the pool is replaced"
            ) from err

    return wrapper  # type: ignore[return-value]


# -- every engine of the process -----------------------------------------------------------


class _Entry(NamedTuple):
    key: tuple[Any, ...]
    scope: _Scope
    # The threads alive when the unit started: an apply() from any other
    # thread during the unit most likely comes from a thread the unit started.
    # Thread objects, not idents: an ended thread's ident is handed to the next
    # thread started (glibc reuses its stack), often one the unit starts.
    threads: frozenset[threading.Thread]


class _Watched:
    """The units running in this process, by database; read without a lock by the
    listeners (a list replaced whole, never mutated in place)."""

    def __init__(self) -> None:
        self.scopes: list[_Entry] = []
        self.lock = threading.Lock()
        self.installed = False


_watched = _Watched()


# The running unit's routing (its Flask-SQLAlchemy binds), in the unit's own
# context only: a write from it through another bind's engine is refused,
# naming the bind; other threads (a request served meanwhile) may write there.
_routing: ContextVar[Routing | None] = ContextVar("seedguard_unit_routing", default=None)


@contextlib.contextmanager
def watch(scope: _Scope) -> Iterator[None]:
    """Watch every engine of the process for writes to ``scope``'s database while it runs,
    and, from the unit's own context, for writes through the engines of the Flask app's
    other binds."""
    if not scope.transactional:
        yield
        return
    from seedguard.binds import routing_for

    routing = routing_for(scope.unit)
    token = _routing.set(routing) if routing is not None else None
    if routing is not None:
        _install()
        _watch_pools(routing)
    try:
        with _watch_database(scope):
            yield
    finally:
        if token is not None:
            _routing.reset(token)


@contextlib.contextmanager
def _watch_database(scope: _Scope) -> Iterator[None]:
    found = identity(scope.dbapi_connection, scope.conn.info)
    if found is None:
        yield
        return
    _install()
    entry = _Entry(found, scope, frozenset(threading.enumerate()))
    with _watched.lock:
        _watched.scopes = [*_watched.scopes, entry]
    try:
        yield
    finally:
        with _watched.lock:
            _watched.scopes = [item for item in _watched.scopes if item is not entry]


def unit_running_on(engine: Any) -> SeedUnit | None:
    """A unit of this process, started before this thread was, running on ``engine``'s
    database: an ``apply()`` from a thread the unit started would wait for the unit's
    own locks (an applier in another thread that was there before waits its turn)."""
    me = threading.current_thread()
    scopes = [entry for entry in _watched.scopes if me not in entry.threads]
    if not scopes:
        return None
    with seedguard_code():
        connection = engine.raw_connection()
        try:
            found = identity(connection.dbapi_connection, connection.info)
        finally:
            connection.close()
    return next((entry.scope.unit for entry in scopes if entry.key == found), None)


def _install() -> None:
    with _watched.lock:
        if _watched.installed:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.pool import Pool

        # Class-level: every engine and pool of the process, also those made
        # later. Installed once; outside a unit each costs one list test.
        event.listen(Engine, "before_cursor_execute", _before_execute)
        event.listen(Pool, "checkout", _checkout)
        event.listen(Pool, "checkin", _checkin)
        _watched.installed = True


def _scopes_for(dbapi_connection: Any, info: dict[Any, Any] | None) -> list[_Scope]:
    scopes = _watched.scopes
    if not scopes or _seedguard.get():
        return []
    if any(dbapi_connection is entry.scope.dbapi_connection for entry in scopes):
        return []  # a unit's own connection: the guard and the canary watch it
    found = identity(dbapi_connection, info)
    return [entry.scope for entry in scopes if entry.key == found]


def _before_execute(conn: Connection, cursor: Any, statement: str, parameters: Any,
                    context: Any, executemany: bool) -> None:
    if not _watched.scopes:
        routing = _routing.get()
        if routing is not None:
            _other_bind(routing, conn, statement)
        return
    from seedguard.guard import OTHER_CONNECTION_FIX, is_write
    from seedguard.redact import redact_url

    scopes = _scopes_for(conn.connection.dbapi_connection, conn.info)
    if not scopes:
        routing = _routing.get()
        if routing is not None:
            _other_bind(routing, conn, statement)
        return
    if not is_write(statement):
        return
    words = " ".join(statement.split()[:3])
    escape = None
    for scope in scopes:
        escape = scope.refuse(
            f"a write ({words}...) on a connection other than the unit's own, to the unit's "
            f"database, through engine {redact_url(conn.engine.url)} in thread "
            f"{threading.current_thread().name!r}, was refused: it would commit outside the "
            f"unit's transaction. {OTHER_CONNECTION_FIX}"
        )
    assert escape is not None
    raise escape


def _other_bind(routing: Routing, conn: Connection, statement: str) -> None:
    """Refuse a write from the unit's own code through another bind's engine: it goes to
    another database than the unit's, outside the unit's transaction."""
    if _seedguard.get():
        return
    other, key = routing.engine_key(conn.engine)
    if not other:
        return
    from seedguard.guard import is_write
    from seedguard.redact import redact_url

    if is_write(statement):
        words = " ".join(statement.split()[:3])
        raise routing.refuse(key, f"a connection of engine {redact_url(conn.engine.url)} "
                             f"({words}...)")


# The pools of binds whose checkouts a unit may have to make read-only; a listener
# on each, added once and never removed (changing a pool's listeners while another
# thread checks out can fail that checkout: see seedguard.guard.guarding_pool).
_BIND_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


def _watch_pools(routing: Routing) -> None:
    """Make the connections that the unit's own code checks out of another bind's pool
    read-only at the database while the unit runs: a write through a raw DB-API
    connection (``engine.raw_connection()``), which no SQLAlchemy event sees, is
    refused by that bind's server."""
    from sqlalchemy import event

    for key, engine in routing.engines.items():
        if key == routing.own:
            continue
        pool = engine.pool
        with _watched.lock:
            if pool in _BIND_POOLS:
                continue
            _BIND_POOLS.add(pool)
            event.listen(pool, "checkout", functools.partial(_bind_checkout, pool))


def _bind_checkout(pool: Any, dbapi_connection: Any, record: Any, proxy: Any) -> None:
    routing = _routing.get()
    if routing is None or _seedguard.get():
        return
    if not any(key != routing.own and engine.pool is pool
               for key, engine in routing.engines.items()):
        return
    _read_only(dbapi_connection, record)


def _read_only(dbapi_connection: Any, record: Any) -> None:
    """Make a checked-out connection read-only until its check-in (:func:`_checkin`)."""
    if record.info.get("seedguard_read_only") is dbapi_connection:
        return
    probe = probe_for(dbapi_connection)
    try:
        probe.read_only(dbapi_connection, True)
    except Exception as err:
        log.debug("could not make a connection read-only: %s", type(err).__name__)
        return
    record.info["seedguard_read_only"] = dbapi_connection


def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if not _scopes_for(dbapi_connection, record.info):
        return
    _read_only(dbapi_connection, record)


def _checkin(dbapi_connection: Any, record: Any) -> None:
    marked = record.info.pop("seedguard_read_only", None) if record is not None else None
    if marked is None or dbapi_connection is None or marked is not dbapi_connection:
        return
    try:
        probe_for(dbapi_connection).read_only(dbapi_connection, False)
    except Exception as err:
        # Never hand a read-only connection back to the app.
        log.debug("could not undo read-only; discarding the connection: %s",
                  type(err).__name__)
        record.invalidate(err)
