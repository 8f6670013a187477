"""One PostgreSQL schema or one MySQL/MariaDB database as a target of its own.

``Schema(bind, name)`` is what ``apply()`` and ``apply_each()`` take for a
tenant: the units' unqualified names resolve in ``name`` and the ledger lives
there (``ledger_schema``), so each schema has its own ledger, its own database
lock (keyed by the ledger's schema) and its own file lock.

Every connection of the target is a connection of the bind's own pool: one
engine serves every schema of a server. While seedguard holds a connection
for a schema it points the session at it (``search_path`` on PostgreSQL, the
default database, ``USE``, on MySQL/MariaDB), and the pool's check-in puts the
session's own setting back before anyone else gets the connection. One
class per dialect knows how (:data:`SCOPES`), as the locks do.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from seedguard.bydialect import ByDialect, Registry
from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

# Where a pooled DB-API connection remembers the setting it had before a
# schema was entered (the pool record's info dict outlives each checkout).
_SAVED = "seedguard.schema.saved"
# Marks a pool whose check-in restores that setting (one listener per pool).
_RESTORES = "seedguard_schema_restores"
_INSTALLING = threading.Lock()
_MAX_NAME = 64  # MySQL/MariaDB database names; PostgreSQL's limit is 63 bytes


@dataclass(frozen=True)
class Schema:
    """One PostgreSQL schema, or one MySQL/MariaDB database, as a target.

    :param bind: the server: an ``Engine`` or a URL. Every ``Schema`` of one
        engine shares that engine's pool; ``apply_each`` shares one engine per
        URL among all its schemas.
    :param name: the schema (PostgreSQL) or database (MySQL/MariaDB). It must
        exist; seedguard creates its ledger there, not the schema itself.

    Its label (in :class:`seedguard.FleetResult` and the CLI) is ``name``.
    """

    bind: Engine | str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > _MAX_NAME \
                or "\x00" in self.name:
            raise ConfigError(
                f"Schema name {self.name!r}: expected the name of an existing schema "
                f"(PostgreSQL) or database (MySQL/MariaDB), 1-{_MAX_NAME} characters"
            )

    @property
    def label(self) -> str:
        return self.name

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """An engine whose connections resolve unqualified names in this schema.

        Made on the bind's engine (its pool is shared); one made here from a
        URL is disposed of afterwards.
        """
        if not isinstance(self.bind, str):
            yield scoped(self.bind, self.name)
            return
        from seedguard.connect import create

        base = create(self.bind)
        try:
            yield scoped(base, self.name)
        finally:
            base.dispose()


SCOPES: Registry[SchemaScope] = Registry("schema target")
"""The :class:`SchemaScope` class of each dialect that has schemas to target."""


class SchemaScope(ByDialect):
    """How one dialect points a session at a schema and back; one subclass per dialect.

    Each method runs on the DB-API connection itself, outside SQLAlchemy's
    transaction bookkeeping, at checkout (before the caller sees the
    connection) and at check-in (after the pool's reset).
    """

    registry = SCOPES

    def enter(self, dbapi_connection: Any, quoted: str) -> Any:
        """Point the session at ``quoted`` (the schema, quoted); return the setting it had."""
        raise NotImplementedError

    def restore(self, dbapi_connection: Any, saved: Any) -> None:
        """Put back what :meth:`enter` returned; raise if that is impossible."""
        raise NotImplementedError

    # The schemas a LIKE pattern selects: the server's own ones left out.
    list_sql: ClassVar[str] = ""


class PostgresScope(SchemaScope):
    """``search_path``: the schema alone, so a new table lands there too."""

    dialects = ("postgresql",)
    list_sql = (
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname LIKE :pattern "
        "AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY nspname"
    )

    def enter(self, dbapi_connection: Any, quoted: str) -> Any:
        # One round trip reads the old path and sets the new one.
        row = _session_level(
            dbapi_connection,
            "SELECT pg_catalog.current_setting('search_path'), "
            f"pg_catalog.set_config('search_path', $sg${quoted}$sg$, false)",
        )
        return row[0]

    def restore(self, dbapi_connection: Any, saved: Any) -> None:
        text = str(saved)
        if "$sg$" in text:  # cannot be quoted as below; a fresh session is cheap
            raise ConfigError("search_path cannot be restored")
        _session_level(dbapi_connection,
                       f"SELECT pg_catalog.set_config('search_path', $sg${text}$sg$, false)")


def _session_level(dbapi_connection: Any, statement: str) -> Any:
    """Run ``statement`` so that what it sets outlives the caller's rollbacks.

    A SET inside a transaction that is rolled back is undone, so it runs in
    autocommit (switching it is client-side in psycopg, psycopg2 and pg8000:
    no round trip), else it is committed (one more round trip).
    """
    switched = False
    if getattr(dbapi_connection, "autocommit", None) is False:
        try:
            dbapi_connection.autocommit = True
            switched = True
        except Exception:  # in a transaction: commit it below instead
            switched = False
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        if switched:
            dbapi_connection.autocommit = False
    if not switched:
        dbapi_connection.commit()
    return row


class MySQLScope(SchemaScope):
    """The session's default database (``USE``), which is not transactional."""

    dialects = ("mysql", "mariadb")
    list_sql = (
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :pattern "
        "AND schema_name NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') "
        "ORDER BY schema_name"
    )

    def enter(self, dbapi_connection: Any, quoted: str) -> Any:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT DATABASE()")
            row = cursor.fetchone()
            cursor.execute(f"USE {quoted}")
        finally:
            cursor.close()
        return row[0]

    def restore(self, dbapi_connection: Any, saved: Any) -> None:
        if saved is None:
            # A session with no default database cannot get back to having
            # none: the pool gets a fresh connection instead.
            raise ConfigError("no default database to return to")
        cursor = dbapi_connection.cursor()
        try:
            quoted = "`" + str(saved).replace("`", "``") + "`"
            cursor.execute(f"USE {quoted}")
        finally:
            cursor.close()


def scoped(engine: Engine, name: str) -> Engine:
    """``engine``, with each connection it hands out resolving names in schema ``name``.

    An ``Engine.execution_options()`` copy: it shares the pool (and so the
    connections) with ``engine``, and the listener that enters the schema is
    its own, so ``engine`` and other schemas' copies are untouched.
    """
    from sqlalchemy import event

    scope = _scope_class(engine)()
    quoted = engine.dialect.identifier_preparer.quote_identifier(name)
    if "$sg$" in quoted:  # the delimiter PostgresScope quotes the path with
        raise ConfigError(f"Schema name {name!r} may not contain '$sg$'")
    restore_on_checkin(engine)
    copy = engine.execution_options(seedguard_schema=name)

    def _enter(conn: Connection) -> None:
        info = conn.connection.info
        saved = scope.enter(conn.connection.dbapi_connection, quoted)
        # Only the first schema's entry saves: that is the session's own setting.
        info.setdefault(_SAVED, saved)

    event.listen(copy, "engine_connect", _enter)
    return copy


def _scope_class(engine: Engine) -> type[SchemaScope]:
    scope_class = SCOPES.get(engine.dialect.name)
    if scope_class is None:
        raise ConfigError(
            f"seedguard.Schema needs PostgreSQL (a schema) or MySQL/MariaDB (a database); "
            f"{engine.dialect.name} has no schemas to target: give each tenant its own "
            "URL instead"
        )
    return scope_class


def schemas_like(engine: Engine, pattern: str) -> list[str]:
    """The names of the schemas (PostgreSQL) or databases (MySQL/MariaDB) matching the SQL
    ``LIKE`` ``pattern``, sorted; the server's own (``pg_*``, ``information_schema``,
    ``mysql``, ``performance_schema``, ``sys``) are never among them.

    :param engine: the server's engine.
    :param pattern: a ``LIKE`` pattern (``%`` any run of characters, ``_`` one character).
    """
    from sqlalchemy import text

    from seedguard.connect import connect

    statement = _scope_class(engine).list_sql
    with connect(engine) as conn:
        return [str(row[0]) for row in conn.execute(text(statement), {"pattern": pattern})]


def restore_on_checkin(engine: Engine) -> None:
    """Install, once per pool, the check-in listener that leaves the schema again."""
    from sqlalchemy import event

    scope = _scope_class(engine)()
    pool = engine.pool
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        if _SAVED not in record.info:
            return
        saved = record.info.pop(_SAVED)
        if dbapi_connection is None:  # invalidated: the session is gone with its setting
            return
        try:
            scope.restore(dbapi_connection, saved)
        except Exception as err:
            # A session left in a tenant's schema must not reach the
            # application: a fresh connection costs less than a write into
            # the wrong tenant.
            log.debug("could not leave the schema (%s); the connection is closed",
                      type(err).__name__)
            record.invalidate(err)

    with _INSTALLING:
        if not getattr(pool, _RESTORES, False):
            event.listen(pool, "checkin", _checkin)
            setattr(pool, _RESTORES, True)


def target_label(target: object) -> str:
    """How a target is named in results and output: a schema's name, else its URL."""
    from seedguard.connect import safe_url

    if isinstance(target, Schema):
        return target.label
    if isinstance(target, str):
        return safe_url(target)  # an unparseable URL too, its password masked
    url = getattr(target, "url", None)
    if url is not None:
        return safe_url(url)
    raise ConfigError(f"not a target: {target!r}; expected a URL, an Engine or a Schema")
