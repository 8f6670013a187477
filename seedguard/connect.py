"""Turning settings into an Engine, and connection errors into ConfigError.

Every message built here shows the URL with its password hidden, and any
driver message is scrubbed of the password too: drivers sometimes echo the
connection string back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from seedguard.config import Settings

_DRIVER_EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
_NO_DATABASE = (
    "no database configured: pass a URL or Engine to apply(), set SEEDGUARD_URL, use --url, "
    "add `url = \"...\"` under [tool.seedguard] in pyproject.toml, or call apply() inside a "
    "Flask app context with Flask-SQLAlchemy"
)


@contextlib.contextmanager
def engine_for(settings: Settings) -> Iterator[Engine]:
    """The settings' engine; one made from a URL here is disposed of afterwards."""
    from seedguard.aio import require_sync_context

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


def create(url_text: str) -> Engine:
    """An Engine for ``url_text``, with a ConfigError for each way that can fail."""
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
    try:
        return create_engine(url)
    except NoSuchModuleError as err:
        raise ConfigError(
            f"unknown database dialect or driver in {safe_url(url)}: {url.drivername!r}; "
            "check the part before ://"
        ) from err
    except ImportError as err:
        extra = _DRIVER_EXTRAS.get(url.get_backend_name())
        hint = (f"pip install 'seedguard[{extra}]'" if extra
                else f"install the {url.drivername} driver")
        raise ConfigError(
            f"the database driver for {safe_url(url)} is not installed ({err.name or err}); "
            f"{hint}"
        ) from err
    except (ArgumentError, TypeError, ValueError) as err:
        raise ConfigError(
            f"cannot use database URL {safe_url(url)}: {scrub(str(err), url)}"
        ) from err


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


def safe_url(url: URL) -> str:
    """The URL as text with the password hidden."""
    return url.render_as_string(hide_password=True)


def scrub(message: str, url: URL) -> str:
    """``message`` with the URL's password replaced, wherever a driver echoed it."""
    password = url.password
    if password:
        message = message.replace(str(password), "***")
    return message.strip().splitlines()[0] if message.strip() else message


def _mask(url_text: str) -> str:
    # An unparseable URL cannot be rendered by SQLAlchemy; hide what looks
    # like a password (between "user:" and "@") by hand.
    scheme, sep, rest = url_text.partition("://")
    if not sep:
        scheme, rest = "", url_text
    if "@" not in rest:
        return url_text
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in userinfo else url_text
