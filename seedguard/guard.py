"""What a transactional unit may not do, refused before it reaches the database.

A unit's work and its ledger row commit together only if nothing ends the
unit's transaction early and nothing writes around it. While a unit runs,
listeners on the engine seedguard applies with refuse:

- on the unit's own connection, anything that would end its transaction:
  ``Connection.commit()`` / ``rollback()``, literal ``COMMIT`` / ``ROLLBACK`` /
  ``BEGIN`` statements, and on MySQL/MariaDB the statements that commit
  implicitly (DDL, ``TRUNCATE``, ``LOCK TABLES``, ...); a later commit would
  otherwise record work that is already half durable;
- on any other connection of the engine, from the unit's own context (its
  thread, or its task under asyncio), a write: it would commit outside the
  unit's transaction, or on SQLite wait for the write lock the unit holds
  ("database is locked" after five seconds); reads stay allowed;
- a pool that hands the unit's own DB-API connection to a second checkout
  (``StaticPool``, ``SingletonThreadPool``): that connection's commit or
  rollback would be the unit's.

Each refusal raises :class:`UnitEscape` and is remembered, so a unit that
catches the error still fails (a second checkout from a shared pool is only
remembered: see ``_checkout``). The scope is a context variable, so other
threads and tasks using the same engine are not affected.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from seedguard.errors import UnitEscape

__all__ = ["EngineGuard", "UnitEscape", "current_unit", "ending", "is_write",
           "transaction_ender"]

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from seedguard.unit import SeedUnit

SESSIONS_TO_USE = "the session argument, db.session, or apply(scoped_sessions=...)"
# What to do instead of writing on another connection: the one advice both the
# guard (the run's own engine) and seedguard.verify (every other engine) give.
OTHER_CONNECTION_FIX = (
    f"Write through the unit's session ({SESSIONS_TO_USE}); reads on other connections are "
    "allowed. A helper "
    "that writes through a connection of its own (db.create_all(), "
    "metadata.create_all(engine), Flask-Alembic's upgrade) cannot join the unit: declare "
    "the unit transactional=False, or create the schema with `seedguard upgrade --schema` "
    "(apply(schema=True)) and keep only the rows in the unit"
)


class _Scope:
    """The unit running in this context, on which connection, and what was refused."""

    # A plain class, not a dataclass: generating a dataclass's methods is
    # import work that every process importing the run path would pay.
    __slots__ = ("conn", "dbapi_connection", "ending", "refused", "transactional", "unit")

    def __init__(self, unit: SeedUnit, conn: Connection, dbapi_connection: Any,
                 transactional: bool) -> None:
        self.unit = unit
        self.conn = conn
        self.dbapi_connection = dbapi_connection
        self.transactional = transactional
        # Set while seedguard itself ends the transaction (its commit or rollback).
        self.ending = False
        self.refused: UnitEscape | None = None

    def refuse(self, message: str) -> UnitEscape:
        err = UnitEscape(f"unit {self.unit.name!r} v{self.unit.version}: {message}")
        if self.refused is None:
            self.refused = err
        return err


_scope: ContextVar[_Scope | None] = ContextVar("seedguard_unit_scope", default=None)


class EngineGuard:
    """The listeners of one run on one engine; :meth:`unit` opens a unit's scope.

    Installed once per locked run and removed after it, so an engine costs
    nothing extra outside seedguard's work.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._pool: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> EngineGuard:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before_execute)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)
        self._pool = guarding_pool(self.engine.pool)
        self._pool.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before_execute)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)
        if self._pool is not None:
            self._pool.__exit__(None, None, None)
            self._pool = None

    @contextlib.contextmanager
    def unit(self, conn: Connection, unit: SeedUnit, *,
             transactional: bool = True) -> Iterator[_Scope]:
        """Guard ``unit`` running on ``conn``; the scope says whether anything was refused."""
        scope = _Scope(unit, conn, conn.connection.dbapi_connection, transactional)
        token = _scope.set(scope)
        try:
            yield scope
        finally:
            _scope.reset(token)

    # -- listeners ---------------------------------------------------------------

    def _before_execute(self, conn: Connection, cursor: Any, statement: str, parameters: Any,
                        context: Any, executemany: bool) -> None:
        scope = _scope.get()
        if scope is None or scope.ending or not scope.transactional:
            return
        if conn is scope.conn:
            reason = transaction_ender(statement, self.dialect)
            if reason is not None:
                raise scope.refuse(reason)
            return
        if is_write(statement):
            raise scope.refuse(
                "wrote on a connection other than the unit's own "
                f"({_first_words(statement)}...): that write would not be part of the "
                f"unit's transaction. {OTHER_CONNECTION_FIX}"
            )

    def _commit(self, conn: Connection) -> None:
        self._ends(conn, "commit")

    def _rollback(self, conn: Connection) -> None:
        self._ends(conn, "rollback")

    def _ends(self, conn: Connection, what: str) -> None:
        scope = _scope.get()
        if scope is None or scope.ending or not scope.transactional:
            return
        if conn is not scope.conn:
            if conn.connection.dbapi_connection is scope.dbapi_connection and what == "commit":
                # A shared pool's second connection: its commit would be the
                # unit's (its rollback cannot be stopped: the pool would roll
                # back anyway; the checkout already failed the unit).
                raise scope.refused or scope.refuse("committed a second connection")
            return
        raise scope.refuse(
            f"called {what}() on the unit's connection, which would end the unit's "
            "transaction before its ledger row is written; use session.commit() (it ends "
            "a savepoint), or make the unit transactional=False if it must commit"
        )



# One checkout listener per pool, however many runs guard it at once: the
# engines of apply_each's schemas share one pool, and adding or removing a
# pool listener while another thread checks out can fail that checkout
# ("deque mutated during iteration": SQLAlchemy's event lists are not
# thread-safe for changes while in use).
_GUARDED_POOLS: dict[int, int] = {}
_GUARDED_POOLS_LOCK = threading.Lock()


@contextlib.contextmanager
def guarding_pool(pool: Any) -> Iterator[None]:
    """Hold the checkout guard on ``pool`` (installed by the first holder, removed by the
    last); a fleet holds it across its run so that its workers never change it."""
    from sqlalchemy import event

    with _GUARDED_POOLS_LOCK:
        count = _GUARDED_POOLS.get(id(pool), 0)
        if count == 0:
            event.listen(pool, "checkout", _checkout)
        _GUARDED_POOLS[id(pool)] = count + 1
    try:
        yield
    finally:
        with _GUARDED_POOLS_LOCK:
            count = _GUARDED_POOLS[id(pool)] - 1
            if count == 0:
                del _GUARDED_POOLS[id(pool)]
                event.remove(pool, "checkout", _checkout)
            else:
                _GUARDED_POOLS[id(pool)] = count


def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    scope = _scope.get()
    if scope is None or not scope.transactional \
            or dbapi_connection is not scope.dbapi_connection:
        return
    # Recorded, not raised: a checkout listener that raises makes the pool
    # close the DB-API connection, which here is the unit's own (and for
    # sqlite:// the whole database). The unit fails when it returns.
    scope.refuse(
        "opened a second connection, but the engine's pool "
        f"({type(scope.conn.engine.pool).__name__}) hands out the unit's own DB-API "
        "connection, so that connection's commit or rollback is the unit's. "
        f"Use {SESSIONS_TO_USE}"
    )


@contextlib.contextmanager
def ending(scope: _Scope) -> Iterator[None]:
    """seedguard itself commits or rolls back the unit's transaction now."""
    scope.ending = True
    try:
        yield
    finally:
        scope.ending = False


def current_unit() -> SeedUnit | None:
    """The unit running in this context, if any (for refusing a re-entrant apply())."""
    scope = _scope.get()
    return scope.unit if scope is not None else None


# -- statement classification ------------------------------------------------------
#
# Reading the SQL text is only the early, friendly refusal: the canary in
# seedguard.verify is what the guarantee rests on. The patterns are compiled on
# first use, not at import: compiling them is most of what importing the run
# path would otherwise cost a process that never runs a unit.

# MySQL/MariaDB commit the current transaction implicitly before (and after)
# these ("Statements That Cause an Implicit Commit" in the MySQL manual).
# CREATE/DROP TEMPORARY TABLE do not.
_MYSQL_IMPLICIT_COMMIT = (
    r"((CREATE|ALTER|DROP|RENAME|TRUNCATE|GRANT|REVOKE|INSTALL|UNINSTALL|ANALYZE|OPTIMIZE"
    r"|REPAIR|CHECK|CACHE|FLUSH|RESET|PURGE|CHANGE)\b"
    r"|(LOCK|UNLOCK)\s+TABLES?\b|LOAD\s+INDEX\b|SET\s+PASSWORD\b"
    r"|SET\s+(SESSION\s+|LOCAL\s+|@@(SESSION\.|LOCAL\.)?)?AUTOCOMMIT\s*(=|:=|TO)\s*(1|ON|TRUE)\b"
    r"|(START|STOP)\s+(SLAVE|REPLICA)\b)"
)


class _Patterns:
    """The reader's patterns, compiled together on first use."""

    def __init__(self, **patterns: re.Pattern[str]) -> None:
        vars(self).update(patterns)

    comments: re.Pattern[str]
    quoted: re.Pattern[str]
    ends_transaction: re.Pattern[str]
    mysql_implicit_commit: re.Pattern[str]
    mysql_temporary: re.Pattern[str]
    write: re.Pattern[str]
    dml_anywhere: re.Pattern[str]
    body_opens: re.Pattern[str]
    mysql_block_opens: re.Pattern[str]
    inner_start: re.Pattern[str]
    block_begins: re.Pattern[str]
    block_ends: re.Pattern[str]
    compound_ends: re.Pattern[str]


@functools.cache
def _patterns() -> _Patterns:
    return _Patterns(
        comments=re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S),
        quoted=re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\$(\w*)\$.*?\$\1\$",
                          re.S),
        ends_transaction=re.compile(
            r"(COMMIT|END|ABORT|BEGIN|START\s+TRANSACTION|PREPARE\s+TRANSACTION|XA"
            r"|ROLLBACK(?!\s+(WORK\s+)?TO\b))\b"),
        mysql_implicit_commit=re.compile(_MYSQL_IMPLICIT_COMMIT),
        mysql_temporary=re.compile(
            r"(CREATE\s+(OR\s+REPLACE\s+)?TEMPORARY|DROP\s+TEMPORARY)\s+TABLE\b"),
        write=re.compile(
            r"(INSERT|UPDATE|DELETE|MERGE|REPLACE|UPSERT|CREATE|ALTER|DROP|RENAME|TRUNCATE"
            r"|GRANT|REVOKE|COMMENT|COPY|LOCK|VACUUM|REINDEX|CLUSTER|REFRESH|IMPORT|LOAD)\b"),
        dml_anywhere=re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b"),
        # A statement whose body is a BEGIN ... END block with ';' inside: a
        # SQLite (or MySQL) trigger, PostgreSQL's SQL-standard function body
        # (BEGIN ATOMIC). Its BEGIN and END delimit the body, not a transaction.
        body_opens=re.compile(
            r"CREATE\s+(OR\s+REPLACE\s+)?(TEMP(ORARY)?\s+)?TRIGGER\b.*?\bBEGIN\b"
            r"|CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b.*?\bBEGIN\s+ATOMIC\b", re.S),
        # MariaDB's anonymous compound statement, optionally labelled.
        mysql_block_opens=re.compile(r"(\w+\s*:\s*)?BEGIN\s+NOT\s+ATOMIC\b"),
        # Inside a block a statement also starts after these (IF ... THEN, a
        # loop's body, a label), so a COMMIT there is found at its start.
        inner_start=re.compile(r"\b(?:THEN|ELSE|DO|LOOP|REPEAT)\b|^\s*\w+\s*:(?!=)"),
        # Inside a stored program BEGIN [WORK] always opens a nested block
        # (MariaDB's "BEGIN END" page), and END closes one unless it ends an
        # IF, CASE or loop.
        block_begins=re.compile(r"(\w+\s*:\s*)?BEGIN(\s+NOT\s+ATOMIC|\s+WORK)?\b"),
        block_ends=re.compile(r"END(?!\s+(IF|CASE|LOOP|WHILE|REPEAT|FOR)\b)\b"),
        compound_ends=re.compile(r"END\s+(IF|CASE|LOOP|WHILE|REPEAT|FOR)\b"),
    )


def _statements(sql: str) -> list[str]:
    """The statements of ``sql``, upper-cased, without comments or quoted text."""
    patterns = _patterns()
    text = patterns.quoted.sub("''", patterns.comments.sub(" ", sql))
    return [part.strip().upper() for part in text.split(";") if part.strip()]


def _ender(statement: str, dialect: str) -> str | None:
    """Why one statement (its start) would end the transaction on ``dialect``, or None."""
    patterns = _patterns()
    if patterns.ends_transaction.match(statement):
        return (f"ran {_first_words(statement)!r}, which would end the unit's transaction "
                "before its ledger row is written; use session.commit() (it ends a "
                "savepoint), or make the unit transactional=False if it must commit")
    if dialect in ("mysql", "mariadb") and patterns.mysql_implicit_commit.match(statement) \
            and not patterns.mysql_temporary.match(statement):
        return (f"ran {_first_words(statement)!r}, which MySQL/MariaDB commit implicitly, "
                "ending the unit's transaction half done; move the DDL into an alembic "
                "migration (see `seedguard upgrade --schema`), or make the unit "
                "transactional=False")
    return None


def _inside_block(statement: str, depth: int, dialect: str) -> tuple[int, str | None]:
    """One ';'-separated part inside a BEGIN ... END block: the new depth, and a refusal.

    The block's own BEGIN and END (nested ones too) pass; every statement
    inside is read as at the top, so a COMMIT (or DDL on MySQL) in a block
    is still refused.
    """
    patterns = _patterns()
    for part in patterns.inner_start.split(statement):
        part = part.strip().lstrip("(")
        if not part:
            continue
        opened = patterns.block_begins.match(part)
        if opened:
            depth += 1
            part = part[opened.end():].strip()
            if not part:
                continue
        if patterns.block_ends.match(part):
            depth -= 1
            if depth == 0:
                return 0, None
            continue
        if patterns.compound_ends.match(part):  # END IF, END LOOP, ...
            continue
        reason = _ender(part, dialect)
        if reason is not None:
            return depth, reason
    return depth, None


def transaction_ender(sql: str, dialect: str) -> str | None:
    """Why ``sql`` would end the current transaction on ``dialect``, or None.

    A block's BEGIN ... END (a trigger's body, MariaDB's ``BEGIN NOT ATOMIC``,
    PostgreSQL's ``BEGIN ATOMIC``) is not transaction control; a COMMIT inside
    or after one is.
    """
    patterns = _patterns()
    mysql = dialect in ("mysql", "mariadb")
    depth = 0
    for statement in _statements(sql):
        statement = statement.lstrip("(")
        if depth:
            depth, reason = _inside_block(statement, depth, dialect)
        else:
            reason = _ender(statement, dialect) if not (
                mysql and patterns.mysql_block_opens.match(statement)) else None
            if reason is None:
                opened = patterns.body_opens.match(statement) or (
                    patterns.mysql_block_opens.match(statement) if mysql else None)
                if opened:
                    depth, reason = _inside_block(statement[opened.end():], 1, dialect)
        if reason is not None:
            return reason
    return None


def is_write(sql: str) -> bool:
    """Whether ``sql`` may write (DML, DDL, locks); plain reads are False."""
    patterns = _patterns()
    for statement in _statements(sql):
        statement = statement.lstrip("(")
        if patterns.write.match(statement):
            return True
        if statement.startswith("WITH") and patterns.dml_anywhere.search(statement):
            return True
    return False


def _first_words(statement: str, count: int = 3) -> str:
    return " ".join(_patterns().comments.sub(" ", statement).split()[:count])
