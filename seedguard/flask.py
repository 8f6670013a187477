"""The Flask extension: ``SeedGuard(app, db)`` and the ``flask seedguard`` command group.

Follows Flask-SQLAlchemy's conventions: construct with the app, or without it
and call :meth:`SeedGuard.init_app` from an app factory; the extension lives in
``app.extensions["seedguard"]``; settings are ``SEEDGUARD_*`` keys in
``app.config``. Inside an app context :func:`seedguard.apply` finds the app's
config, the seeds given here and the Flask-SQLAlchemy engine by itself
(see :mod:`seedguard.config`), so module-level seeding under the Werkzeug
reloader, ``flask run --debug`` or gunicorn workers runs each unit once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError
from seedguard.registry import SeedsSpec

if TYPE_CHECKING:
    from flask import Flask

    from seedguard.result import ApplyResult

EXTENSION_NAME = "seedguard"


class SeedGuard:
    """Registers seedguard on a Flask app.

    ``db`` is the app's ``flask_sqlalchemy.SQLAlchemy`` (optional: the engine
    is found through ``app.extensions["sqlalchemy"]`` anyway); ``seeds`` selects
    the units like ``apply(seeds=)`` (``SEEDGUARD_SEEDS`` in ``app.config`` wins
    over it, as an app's config should); ``scoped_sessions`` are the app's
    own ``scoped_session`` objects besides ``db.session`` (which always joins):
    while a unit runs, each returns the unit's session.
    """

    def __init__(self, app: Flask | None = None, db: Any = None, *,
                 seeds: SeedsSpec = None, scoped_sessions: Iterable[Any] = ()) -> None:
        self.db = db
        self.seeds = seeds
        self.scoped_sessions = tuple(scoped_sessions)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Store the extension on ``app`` and add the ``flask seedguard`` commands."""
        if EXTENSION_NAME in app.extensions:
            raise ConfigError(
                f"a SeedGuard instance is already registered on the Flask app {app.name!r}; "
                "create one SeedGuard per app and import that instance instead of calling "
                "init_app() again"
            )
        app.extensions[EXTENSION_NAME] = self
        # Import click only when a Flask app registers the extension.
        from seedguard.cli import cli

        app.cli.add_command(cli, "seedguard")

    def apply(self, **options: Any) -> ApplyResult:
        """``seedguard.apply(**options)`` inside the current app context.

        Outside an app context, push one first (``with app.app_context():``):
        which app's database to seed must be unambiguous.
        """
        from flask import current_app, has_app_context

        from seedguard.api import apply

        if not has_app_context():
            raise ConfigError(
                "SeedGuard.apply() needs an app context: call it inside "
                "`with app.app_context():`"
            )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app.extensions.get(EXTENSION_NAME) is not self:
            raise ConfigError(
                f"this SeedGuard is not the one registered on the current app {app.name!r}; "
                "use app.extensions['seedguard']"
            )
        return apply(**options)
