"""The current Flask app, its Flask-SQLAlchemy engines and binds: found here, and only here.

Configuration (the app's ``SEEDGUARD_*`` keys and its engine), the unit's
sessions (``db.session`` joins the unit), the Flask extension (start-up
seeding) and the alembic integration (Flask-Migrate's config) all ask this
module, as Flask-SQLAlchemy's own ``SQLAlchemy.engines`` property is the one
way into its per-app state.

Nothing here imports Flask: a process that has not imported it has no app to
find, and ``import seedguard`` must not pay Flask's import time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import scoped_session

EXTENSION_NAME = "seedguard"
"""Where :class:`seedguard.flask.SeedGuard` lives in ``app.extensions``."""


def current_app() -> Flask | None:
    """The app of the active app context, or ``None`` (no Flask imported, no context)."""
    if "flask" not in sys.modules:
        return None
    from flask import current_app as proxy
    from flask import has_app_context

    if not has_app_context():
        return None
    app: Flask = proxy._get_current_object()  # type: ignore[attr-defined]
    return app


def extension(app: Flask) -> Any | None:
    """The app's :class:`seedguard.flask.SeedGuard`, if one is registered."""
    return app.extensions.get(EXTENSION_NAME)


def engines(app: Flask) -> dict[str | None, Engine]:
    """The app's Flask-SQLAlchemy engines by bind key (``None``: the default one).

    Empty when the app has no Flask-SQLAlchemy. Read inside the app's context
    (Flask-SQLAlchemy keeps them per app and finds the app through it).
    """
    sqlalchemy_ext = app.extensions.get("sqlalchemy")
    if sqlalchemy_ext is None:
        return {}
    return dict(sqlalchemy_ext.engines)


def bind_engine(app: Flask, key: str | None) -> Engine:
    """The engine of bind ``key`` (``None``: the default database) of ``app``.

    :raises ConfigError: the app has no Flask-SQLAlchemy, or no such bind;
        the message lists the binds it has.
    """
    found = engines(app)
    if not found:
        raise ConfigError(
            f"the Flask app {app.name!r} has no Flask-SQLAlchemy engines: did you forget to "
            "call db.init_app(app)?"
        )
    if key not in found:
        known = ", ".join(repr(name) for name in found if name is not None) or "none"
        what = "a default database" if key is None else f"the bind {key!r}"
        raise ConfigError(
            f"the Flask app {app.name!r} has no {what}; its SQLALCHEMY_BINDS are: {known}"
        )
    return found[key]


def bind_key_of(app: Flask, engine: Engine) -> tuple[bool, str | None]:
    """``(True, key)`` when ``engine`` is one of ``app``'s engines, else ``(False, None)``."""
    for key, candidate in engines(app).items():
        if candidate is engine:
            return True, key
    return False, None


def app_sessions(engine: Engine) -> list[scoped_session[Any]]:
    """The current app's ``db.session`` (and SeedGuard's ``scoped_sessions``), when
    ``engine`` is one of that app's Flask-SQLAlchemy engines (any bind's)."""
    app = current_app()
    if app is None:
        return []
    found: list[scoped_session[Any]] = []
    ext = extension(app)
    found.extend(getattr(ext, "scoped_sessions", ()) or ())
    sqlalchemy_ext = app.extensions.get("sqlalchemy")
    if sqlalchemy_ext is not None and bind_key_of(app, engine)[0]:
        found.append(sqlalchemy_ext.session)
    return found


def default_engine(app: Flask) -> Engine | None:
    """The app's default Flask-SQLAlchemy engine, if it has Flask-SQLAlchemy."""
    sqlalchemy_ext = app.extensions.get("sqlalchemy")
    if sqlalchemy_ext is None:
        return None
    engine: Engine = sqlalchemy_ext.engine
    return engine


def config_values(app: Flask, keys: Mapping[str, str]) -> dict[str, Any]:
    """``app.config[name]`` for each ``{setting: name}`` of ``keys`` (``None`` if unset)."""
    return {setting: app.config.get(name) for setting, name in keys.items()}


def migrate_config() -> Config | None:
    """Flask-Migrate's alembic config of the current app, if it uses Flask-Migrate."""
    app = current_app()
    if app is None:
        return None
    migrate = app.extensions.get("migrate")
    if migrate is None:
        return None
    # Flask-Migrate's own get_config: its env.py expects the options it sets.
    config: Config = migrate.migrate.get_config(migrate.directory)
    return config
