"""The Flask extension: ``SeedGuard(app, db)`` and the ``flask seedguard`` command group.

Follows Flask-SQLAlchemy's conventions: construct with the app, or without it
and call :meth:`SeedGuard.init_app` from an app factory; the extension lives in
``app.extensions["seedguard"]``; settings are ``SEEDGUARD_*`` keys in
``app.config``. Inside an app context :func:`seedguard.apply` finds the app's
config, the seeds given here and the Flask-SQLAlchemy engine by itself
(see :mod:`seedguard.config`).

Seeding at start-up is ``SeedGuard(app, db, apply_on_start=True)``: creating
the app for a server applies the pending units (under the Werkzeug reloader,
``flask run --debug`` and gunicorn workers each unit still runs once, thanks
to the locks), while ``flask seedguard ...``, ``flask db ...`` and every other
``flask`` command except ``run`` leave the database to the command.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError, SeedguardError
from seedguard.registry import SeedsSpec

if TYPE_CHECKING:
    from flask import Flask

    from seedguard.result import ApplyResult

EXTENSION_NAME = "seedguard"
START_CONFIG_KEY = "SEEDGUARD_APPLY_ON_START"

#: ``apply_on_start``: off, on, or on with these keyword arguments for ``apply()``.
StartOption = bool | Mapping[str, Any]

logger = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class SeedGuard:
    """Registers seedguard on a Flask app.

    :param app: the app; or leave it out and call :meth:`init_app` from your
        app factory.
    :param db: the app's ``flask_sqlalchemy.SQLAlchemy`` (optional: the engine
        is found through ``app.extensions["sqlalchemy"]`` anyway).
    :param seeds: selects the units like ``apply(seeds=)``; ``SEEDGUARD_SEEDS``
        in ``app.config`` wins over it, as an app's config should.
    :param scoped_sessions: the app's own ``scoped_session`` objects besides
        ``db.session`` (which always joins): while a unit runs, each returns
        the unit's session.
    :param apply_on_start: seed when the app is created for a server:
        ``True``, or a mapping of keyword arguments for :func:`seedguard.apply`
        (``{"schema": True}`` runs your ``alembic upgrade head`` first). Every
        ``flask`` command except ``run`` skips it, so ``flask seedguard
        status`` shows what is pending and ``flask db downgrade`` is not undone
        first. ``SEEDGUARD_APPLY_ON_START`` in ``app.config`` wins over it
        (e.g. ``False`` in a test config); see :meth:`init_app`.
    """

    def __init__(self, app: Flask | None = None, db: Any = None, *,
                 seeds: SeedsSpec = None, scoped_sessions: Iterable[Any] = (),
                 apply_on_start: StartOption = False) -> None:
        self.db = db
        self.seeds = seeds
        self.scoped_sessions = tuple(scoped_sessions)
        self.apply_on_start = apply_on_start
        _start_options(apply_on_start, "apply_on_start")  # a typo fails here, not at start-up
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, apply_on_start: StartOption | None = None) -> None:
        """Store the extension on ``app``, add the ``flask seedguard`` commands, maybe seed.

        :param app: the app to register on (once per app).
        :param apply_on_start: this app's start-up mode, winning over
            ``SEEDGUARD_APPLY_ON_START`` in its config, which wins over the
            constructor's ``apply_on_start``.

        When the start-up mode is on and the app is not being loaded by a
        ``flask`` command other than ``run``, the pending units are applied
        here, in an app context of ``app``; a failure raises out of
        ``init_app`` (so a server does not start on a half-seeded database).
        Code that runs before this call sees the database unseeded (on a
        first start, empty): in an app factory, call it right after
        ``db.init_app(app)`` and ``Migrate(app, db)``, before factory code
        that reads seeded data, with ``seeds=`` a module path (imported when
        it applies). Without ``seeds=``, call it after the units are declared.
        """
        if EXTENSION_NAME in app.extensions:
            raise ConfigError(
                f"a SeedGuard instance is already registered on the Flask app {app.name!r}; "
                "create one SeedGuard per app and import that instance instead of calling "
                "init_app() again"
            )
        if apply_on_start is not None:
            choice, where = apply_on_start, "init_app(apply_on_start=)"
        elif app.config.get(START_CONFIG_KEY) is not None:
            choice, where = app.config[START_CONFIG_KEY], f"app.config[{START_CONFIG_KEY!r}]"
        else:
            choice, where = self.apply_on_start, "SeedGuard(apply_on_start=)"
        options = _start_options(choice, where)
        app.extensions[EXTENSION_NAME] = self
        # Import click only when a Flask app registers the extension.
        from seedguard.cli import cli

        app.cli.add_command(cli, "seedguard")
        if options is not None:
            self._apply_on_start(app, options)

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

    def _apply_on_start(self, app: Flask, options: Mapping[str, Any]) -> None:
        command = _flask_command()
        if command is not None and command != "run":
            # The command owns the database: `flask seedguard status` must show
            # what is pending, `--dry-run` must not write, `flask db downgrade`
            # must not be re-upgraded first.
            logger.info("not applying seeds at start-up inside `flask %s`; "
                        "`flask seedguard upgrade` applies them", command or "...")
            return
        from seedguard import config as _config
        from seedguard.registry import default_registry

        with app.app_context(), _in_config_words():
            settings = _config.resolve(seeds=options.get("seeds"))
            if settings.seeds is None and len(default_registry) == 0:
                raise ConfigError(
                    f"SeedGuard(apply_on_start=...) on the Flask app {app.name!r} found no seed "
                    "units: give it seeds='myapp.seeds' (then register it early in "
                    "create_app(), before code that reads seeded data), or create it after "
                    "the units are declared"
                )
            result = self.apply(**options)
            engines = _app_engines(app)
        # After the context's teardown, which returns db.session's connection to the pool.
        _release_pool(engines)
        logger.info("applied %d seed unit(s) at start-up of %r", len(result.applied), app.name)


@contextlib.contextmanager
def _in_config_words() -> Iterator[None]:
    """An error that leaves the start-up names a setting as the app's config key.

    The app configures seedguard through ``app.config``, so "raise
    SEEDGUARD_LOCK_TIMEOUT" is the next step there, not ``lock_timeout=``
    (see :meth:`seedguard.errors.SeedguardError.spelled`).
    """
    try:
        yield
    except SeedguardError as err:
        if err.settings:
            from seedguard.settings import as_flask_key

            err.args = (err.spelled(as_flask_key), *err.args[1:])
        raise


def _flask_command() -> str | None:
    """The ``flask`` command that is loading the app in this process.

    ``None`` outside the ``flask`` CLI (gunicorn, uWSGI, ``python app.py``, a
    script). Otherwise the name of the top-level command whose context is
    active (``"run"``, ``"routes"``, ``"shell"``), or ``""`` while the
    ``flask`` group itself loads the app: it does so to find a command the
    app provides (``seedguard``, Flask-Migrate's ``db``) and for ``--help``.

    This asks click, per process, rather than ``FLASK_RUN_FROM_CLI``: Flask
    sets that variable in ``os.environ`` for every ``flask`` command, so it
    also leaks into whatever a command starts (a gunicorn launched from a
    ``flask`` command would look like the CLI).
    """
    import click
    from flask.cli import FlaskGroup, ScriptInfo

    ctx = click.get_current_context(silent=True)
    chain: list[click.Context] = []
    while ctx is not None:
        chain.append(ctx)
        ctx = ctx.parent
    if not chain:
        return None
    root = chain[-1]
    if not isinstance(root.command, FlaskGroup) and not isinstance(root.obj, ScriptInfo):
        return None  # some other click program (celery, a custom script) creating the app
    if len(chain) == 1:
        return ""
    return chain[-2].command.name or chain[-2].info_name or ""


def _start_options(value: Any, where: str) -> dict[str, Any] | None:
    """``apply_on_start`` as ``apply()``'s keyword arguments, or ``None`` when it is off."""
    if isinstance(value, str):
        # From the environment (app.config.from_mapping(os.environ) and the like).
        if value.strip().lower() in _TRUE:
            return {}
        if value.strip().lower() in _FALSE:
            return None
    elif isinstance(value, bool):
        return {} if value else None
    elif isinstance(value, Mapping):
        from seedguard.api import apply

        known = [name for name in inspect.signature(apply).parameters if name != "bind"]
        unknown = sorted(str(key) for key in value if key not in known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown apply() argument(s) {', '.join(unknown)}; "
                f"known: {', '.join(known)}"
            )
        return dict(value)
    raise ConfigError(
        f"{where} must be True, False, or a dict of apply() arguments "
        f"(e.g. {{'schema': True}}), not {value!r}"
    )


def _app_engines(app: Flask) -> list[Any]:
    """The app's Flask-SQLAlchemy engines (inside its app context)."""
    sqlalchemy_ext = app.extensions.get("sqlalchemy")
    return [] if sqlalchemy_ext is None else list(sqlalchemy_ext.engines.values())


def _release_pool(engines: list[Any]) -> None:
    """Close the connections the start-up apply left in the app's engine pools.

    A server may create the app in a master process and fork its workers
    afterwards (gunicorn ``--preload``, uWSGI without ``lazy-apps``); a pooled
    DB-API connection inherited across ``fork()`` is then shared by several
    processes, which corrupts its protocol stream (SQLAlchemy: "Using
    Connection Pools with Multiprocessing or os.fork()"). A pool that holds
    the only connection (``StaticPool``, ``SingletonThreadPool``: SQLite in
    memory) is left alone: closing it would drop the database.
    """
    from sqlalchemy.pool import SingletonThreadPool, StaticPool

    for engine in engines:
        if not isinstance(engine.pool, (StaticPool, SingletonThreadPool)):
            engine.dispose()
