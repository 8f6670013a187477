"""Turning settings into an Engine, and connection errors into ConfigError.

Every message built here shows the URL with its password hidden, and any
driver message is scrubbed of the password too: drivers sometimes echo the
connection string back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from seedguard.config import Settings

# backend -> (the driver a seedguard extra installs, that extra).
_EXTRA_DRIVERS = {"postgresql": ("psycopg", "postgresql"), "mysql": ("pymysql", "mysql"),
                  "mariadb": ("pymysql", "mysql")}
# SQLAlchemy driver name -> what `pip install` fixes it.
_DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "asyncpg": "asyncpg", "psycopg_async": "'psycopg[binary]'",
    "pymysql": "pymysql", "mysqldb": "mysqlclient", "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb", "aiomysql": "aiomysql", "asyncmy": "asyncmy",
    "aiosqlite": "aiosqlite", "pysqlcipher": "sqlcipher3-binary",
}
# Spellings SQLAlchemy does not know -> the dialect meant (postgres:// is Heroku's form).
_DIALECT_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql", "psql": "postgresql",
                    "sqlite3": "sqlite", "maria": "mariadb"}
_NO_DATABASE = (
    "no database configured: pass a URL or Engine to apply(), set SEEDGUARD_URL, use --url, "
    "add `url = \"...\"` under [tool.seedguard] in pyproject.toml, or call apply() inside a "
    "Flask app context with Flask-SQLAlchemy"
)


@contextlib.contextmanager
def engine_for(settings: Settings) -> Iterator[Engine]:
    """The settings' engine; one made from a URL here is disposed of afterwards."""
    if settings.engine is not None:
        require_sync_context(settings.engine)
        yield settings.engine
        return
    if not settings.url:
        raise ConfigError(_NO_DATABASE)
    engine = create(settings.url)
    try:
        require_sync_context(engine)
        yield engine
    finally:
        engine.dispose()


def create(url_text: str, **options: Any) -> Engine:
    """An Engine for ``url_text`` (``options`` go to ``create_engine``), with a
    ConfigError for each way that can fail."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError) as err:
        raise ConfigError(
            f"cannot parse database URL {_mask(url_text)!r}: expected "
            "dialect+driver://user:password@host:port/database, e.g. "
            "postgresql+psycopg://app@localhost/app or sqlite:///app.db"
        ) from err
    check_spelling(url)
    try:
        # pool_pre_ping: a connection that waited in the pool while this
        # applier waited for the lock may have been closed by the server
        # (idle_session_timeout, wait_timeout); a ping replaces it. A new
        # connection is not pinged, so the no-op start-up stays one query.
        return create_engine(url, **{"pool_pre_ping": True, **options})
    except NoSuchModuleError as err:
        raise ConfigError(
            f"unknown database dialect or driver in {safe_url(url)}: {url.drivername!r}; "
            f"{_dialect_hint(url)}"
        ) from err
    except ImportError as err:
        raise ConfigError(
            f"the database driver for {safe_url(url)} is not installed ({err.name or err}); "
            f"{driver_hint(url)}"
        ) from err
    except (ArgumentError, TypeError, ValueError) as err:
        raise ConfigError(
            f"cannot use database URL {safe_url(url)}: {scrub(str(err), url)}"
        ) from err


def check_spelling(url: URL) -> None:
    """Refuse a password with an unescaped ``@``, which ``make_url`` splits into the host.

    The driver would try to reach a host named after the password's tail,
    and its error would print that tail.
    """
    from seedguard.redact import misplaced_password

    if misplaced_password(url) is not None:
        raise ConfigError(
            f"the password in database URL {safe_url(url)} contains an unescaped '@' (it was "
            "read as part of the host); percent-encode it: '@' as %40, ':' as %3A, '/' as %2F"
        )


def driver_hint(url: URL) -> str:
    """What fixes a missing driver for ``url``: the scheme an extra installs, or the package.

    ``mysql://`` means SQLAlchemy's default MySQL driver, mysqlclient, not the
    PyMySQL that ``seedguard[mysql]`` installs: advising the extra alone would
    leave the same error in place.
    """
    backend = url.get_backend_name()
    try:
        driver = url.get_driver_name()
    except Exception:  # the dialect itself failed to load
        driver = url.drivername.partition("+")[2]
    package = _DRIVER_PACKAGES.get(driver)
    install = f"pip install {package}" if package else f"install the {driver!r} driver"
    extra = _EXTRA_DRIVERS.get(backend)
    if extra is None:
        return install
    extra_driver, extra_name = extra
    if driver == extra_driver:
        return f"pip install 'seedguard[{extra_name}]'"
    return (f"use {backend}+{extra_driver}:// (installed by `pip install "
            f"'seedguard[{extra_name}]'`) or {install}")


def _dialect_hint(url: URL) -> str:
    backend, plus, driver = url.drivername.partition("+")
    meant = _DIALECT_ALIASES.get(backend.lower())
    if meant is not None:
        return f"did you mean {meant}{plus}{driver}://?"
    return "check the part before :// (e.g. postgresql+psycopg, mysql+pymysql, sqlite)"


def sqlite_file(url: URL) -> str | None:
    """The file a ``sqlite`` URL names (None: in memory, or not SQLite)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    if database.startswith("file:"):
        return database[len("file:"):].partition("?")[0] or None
    return database


@contextlib.contextmanager
def read_only_engine(settings: Settings) -> Iterator[Engine]:
    """:func:`engine_for`, for commands that only read: a SQLite file is opened read-only.

    SQLite creates a missing file on connect, so `status` on a mistyped URL
    would leave an empty database behind; a missing file is a ConfigError
    naming the path instead, and an existing one is opened with ``mode=ro``.
    """
    with engine_for(settings) as engine:
        path = sqlite_file(engine.url) if settings.engine is None else None
        if path is None or engine.url.get_driver_name() != "pysqlite":
            yield engine
            return
        import os
        import urllib.parse

        from sqlalchemy import event

        if not os.path.isfile(path):
            raise ConfigError(
                f"no SQLite database at {os.path.abspath(path)}; check the URL "
                "(commands that only read never create it)"
            )
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"

        @event.listens_for(engine, "do_connect")
        def _read_only(dialect: object, record: object, cargs: list[object],
                       cparams: dict[str, object]) -> None:
            # The engine's URL stays as given (lock paths and messages use it);
            # only the file is opened read-only.
            cargs[:1] = [uri]
            cparams["uri"] = True

        yield engine


@contextlib.contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """``engine.connect()`` with an unreachable server reported as a ConfigError."""
    with connection_errors(engine):
        conn = engine.connect()
    with conn:
        yield conn


@contextlib.contextmanager
def connection_errors(engine: Engine) -> Iterator[None]:
    """Translate a failure to open a connection into a ConfigError naming the server."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        yield
    except (OperationalError, DBAPIError) as err:
        if not getattr(err, "connection_invalidated", False) and isinstance(err, OperationalError):
            raise ConfigError(
                f"cannot connect to {safe_url(engine.url)}: "
                f"{scrub(str(err.orig), engine.url)}; is the server running and the URL right?"
            ) from err
        raise
    except OSError as err:
        # asyncpg's and aiomysql's connect raise the socket's own error (e.g.
        # ConnectionRefusedError) through SQLAlchemy's adaptation unwrapped.
        raise ConfigError(
            f"cannot connect to {safe_url(engine.url)}: {scrub(str(err), engine.url)}; is the "
            "server running and the URL right?"
        ) from err


def safe_url(url: URL | str) -> str:
    """The URL as text with every password and secret parameter hidden (seedguard.redact)."""
    from seedguard.redact import redact_url

    return redact_url(url)


def scrub(message: str, url: URL | str | None) -> str:
    """The first line of ``message``, the URL's secrets hidden wherever a driver echoed them."""
    from seedguard.redact import redact

    message = redact(message, url)
    return message.strip().splitlines()[0] if message.strip() else message


def _mask(url_text: str) -> str:
    # An unparseable URL cannot be rendered by SQLAlchemy: the redaction
    # rules for free text find its password.
    return safe_url(url_text)


def require_sync_context(engine: Any) -> None:
    """Refuse an ``AsyncEngine``, or an async driver outside the event loop, with the fix."""
    from seedguard.eventloop import in_event_loop, is_async_engine

    if is_async_engine(engine):
        raise ConfigError(
            f"{safe_url(engine.url)} is an AsyncEngine; seedguard.apply() and the other "
            "library calls are synchronous: use `await seedguard.apply_async(engine)`"
        )
    if engine.dialect.is_async and not in_event_loop():
        raise ConfigError(
            f"{safe_url(engine.url)} uses the async driver {engine.dialect.driver!r}; "
            "seedguard.apply() and the other library calls are synchronous: use `await "
            "seedguard.apply_async(...)` from async code (the `seedguard` command accepts "
            "the URL as it is), or a sync driver's URL"
        )
