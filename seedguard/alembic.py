"""Alembic integration: the user's own migrations, next to seedguard's.

- :func:`include_object` / :func:`ignore_ledger`: for the user's ``env.py``, so
  ``alembic revision --autogenerate`` never proposes to create, alter or drop
  seedguard's ledger and its version table.
- :func:`find_config`: where the user's alembic scripts are (``alembic_config``
  setting, Flask-Migrate's directory in a Flask app, ``./alembic.ini``).
- :class:`RevisionGate`: whether a unit's ``requires_revision`` is applied yet
  (it, or a descendant, is among the heads in the user's ``alembic_version``).
- :func:`upgrade_head`: the user's ``alembic upgrade head`` on a given
  connection; the runner calls it under seedguard's locks (``schema=True``).

Alembic is imported inside functions: ``import seedguard`` must stay light.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedguard.config import DEFAULT_LEDGER_TABLE
from seedguard.errors import ConfigError, SeedguardError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

    from seedguard.config import Settings
    from seedguard.unit import SeedUnit

log = logging.getLogger(__name__)

USER_VERSION_TABLE = "alembic_version"
"""The user's version table: alembic's default, which Flask-Migrate keeps too."""

IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]

_WHERE = ("set alembic_config under [tool.seedguard] in pyproject.toml, SEEDGUARD_ALEMBIC_CONFIG "
          "or --alembic-config to your alembic.ini (or its folder)")


# -- autogenerate -----------------------------------------------------------------


def ledger_tables(ledger_table: str = DEFAULT_LEDGER_TABLE) -> frozenset[str]:
    """The tables seedguard owns: the ledger, its version table, its lock holder's and its
    data seeds' journal."""
    return frozenset({ledger_table, f"{ledger_table}_version", f"{ledger_table}_holder",
                      f"{ledger_table}_journal"})


def ignore_ledger(ledger_table: str = DEFAULT_LEDGER_TABLE, *,
                  include_object: IncludeObject | None = None) -> IncludeObject:
    """An ``include_object`` hook that hides seedguard's tables from autogenerate.

    Pass ``ledger_table`` if you configured one; pass your own hook as
    ``include_object`` to chain it (it sees everything else).
    """
    names = ledger_tables(ledger_table)

    def include(obj: Any, name: str | None, type_: str, reflected: bool,
                compare_to: Any) -> bool:
        # Tables are matched by name; their columns, indexes and constraints
        # by the table they belong to (autogenerate compares those separately).
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        if table in names:
            return False
        if include_object is not None:
            return include_object(obj, name, type_, reflected, compare_to)
        return True

    return include


include_object = ignore_ledger()
"""``context.configure(..., include_object=seedguard.alembic.include_object)`` in env.py."""


# -- finding the user's scripts -------------------------------------------------------


def find_config(settings: Settings) -> Config | None:
    """The user's alembic Config, or None if there is none to be found.

    First found wins: ``settings.alembic_config`` (an ``alembic.ini`` or the
    folder holding one); inside a Flask app context, Flask-Migrate's
    directory; ``alembic.ini`` in the current directory.

    A config that was found rather than named (``./alembic.ini``, or one named
    by a ``pyproject.toml``) is used only when its owner is the current user
    or root: its ``env.py`` runs with the database URL (seedguard.trust).
    One named by an argument, an option or ``SEEDGUARD_ALEMBIC_CONFIG`` is
    trusted as given.
    """
    if settings.alembic_config:
        source = settings.sources.get("alembic_config")
        path = Path(settings.alembic_config)
        if source not in _EXPLICIT_SOURCES and not _trusted_ini(path):
            return None
        return _ini_config(path, source)
    flask_config = _flask_migrate_config()
    if flask_config is not None:
        return flask_config
    default = Path("alembic.ini")
    if default.is_file():
        if not _trusted_ini(default.resolve()):
            return None
        return _ini_config(default.resolve(), "current directory")
    return None


# Sources (config.Settings.sources) whose alembic_config someone chose on purpose.
_EXPLICIT_SOURCES = frozenset({"argument", "environment", "Flask app config"})


def _trusted_ini(path: Path) -> bool:
    from seedguard.trust import is_trusted

    ini = path / "alembic.ini" if path.is_dir() else path
    return is_trusted(ini, instead="name it explicitly with SEEDGUARD_ALEMBIC_CONFIG or "
                      "--alembic-config")


def _ini_config(path: Path, source: str | None) -> Config:
    from alembic.config import Config

    folder: Path | None = None
    if path.is_dir():
        folder, path = path, path / "alembic.ini"
    if not path.is_file():
        raise ConfigError(
            f"alembic config {path} (from {source or 'alembic_config'}) does not exist; "
            f"{_WHERE}"
        )
    config = Config(str(path))
    if folder is not None and not config.get_main_option("script_location"):
        # A Flask-Migrate-style folder: its alembic.ini names no script_location.
        config.set_main_option("script_location", str(folder))
    return config


def _flask_migrate_config() -> Config | None:
    from seedguard.flaskapp import migrate_config

    return migrate_config()


def script_directory(config: Config) -> ScriptDirectory:
    """The user's revision graph, with alembic's errors as ConfigError."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(config)
    except CommandError as err:
        raise ConfigError(f"cannot read your alembic scripts: {err}; {_WHERE}") from err


def current_heads(conn: Connection, version_table: str = USER_VERSION_TABLE) -> tuple[str, ...]:
    """The revisions in the user's version table; empty when it was never created."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": version_table})
    return tuple(context.get_current_heads())


def applied_revisions(script: ScriptDirectory, heads: Iterable[str]) -> set[str]:
    """Every revision applied at ``heads``: the heads and all their ancestors."""
    from alembic.util import CommandError

    applied: set[str] = set()
    for head in heads:
        try:
            for revision in script.iterate_revisions(head, "base"):
                applied.add(revision.revision)
        except CommandError as err:
            raise ConfigError(
                f"the database's alembic_version holds {head!r}, which is not among your "
                f"alembic scripts in {script.dir}; point seedguard at the scripts this "
                f"database was migrated with ({_WHERE})"
            ) from err
    return applied


# -- seeds that wait for their schema ------------------------------------------------


class RevisionGate:
    """Answers "is this unit's required revision applied?", reading alembic lazily.

    Nothing is read until the first unit with ``requires_revision`` is asked
    about: the no-op start-up stays one query. The heads are read once per
    gate, from ``conn`` if given (under the locks) or a new connection.
    """

    def __init__(self, settings: Settings, engine: Engine,
                 conn: Connection | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.conn = conn
        self._script: ScriptDirectory | None = None
        self._applied: set[str] | None = None

    def __call__(self, unit: SeedUnit) -> bool:
        required = unit.requires_revision
        if required is None:
            return True
        script, applied = self._load(unit)
        return self._resolve(script, unit, required) in applied

    def _load(self, unit: SeedUnit) -> tuple[ScriptDirectory, set[str]]:
        if self._script is None:
            config = find_config(self.settings)
            if config is None:
                raise ConfigError(
                    f"unit {unit.name!r} requires alembic revision {unit.requires_revision!r} "
                    f"but seedguard cannot find your alembic scripts; {_WHERE}"
                )
            self._script = script_directory(config)
        if self._applied is None:
            if self.conn is not None:
                heads = current_heads(self.conn)
            else:
                from seedguard.connect import connect

                with connect(self.engine) as conn:
                    heads = current_heads(conn)
            self._applied = applied_revisions(self._script, heads)
            log.debug("user's alembic heads: %s", ", ".join(heads) or "none")
        return self._script, self._applied

    def with_connection(self, conn: Connection) -> RevisionGate:
        """A gate that re-reads the heads on ``conn``, keeping the parsed scripts."""
        gate = RevisionGate(self.settings, self.engine, conn)
        gate._script = self._script
        return gate

    @staticmethod
    def _resolve(script: ScriptDirectory, unit: SeedUnit, required: str) -> str:
        # Accept a unique prefix, as alembic's own commands do.
        from alembic.util import CommandError

        try:
            revision = script.get_revision(required)
        except CommandError as err:
            raise ConfigError(
                f"unit {unit.name!r} requires alembic revision {required!r}, which is not "
                f"among your alembic scripts in {script.dir} ({err}); fix requires_revision, "
                f"or {_WHERE}"
            ) from err
        if revision is None:
            raise ConfigError(f"unit {unit.name!r}: requires_revision {required!r} names no "
                              "single revision; give a revision id")
        return revision.revision


@contextlib.contextmanager
def _loggers_kept() -> Iterator[None]:
    """Undo what ``fileConfig`` in the user's env.py does to this process's logging.

    The env.py that ``alembic init`` and Flask-Migrate write calls
    ``logging.config.fileConfig(alembic.ini)``: it replaces the root logger's
    handlers and level and, with its default ``disable_existing_loggers=True``,
    mutes every logger that already exists (seedguard's and the
    application's) for the rest of the process. That configuration is meant
    for the ``alembic`` command; run in-process, the application's own
    logging set-up must survive it.
    """
    loggers = logging.Logger.manager.loggerDict
    disabled = {name for name, logger in loggers.items()
                if isinstance(logger, logging.Logger) and logger.disabled}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        # Every logger not disabled before, including ones created meanwhile
        # (e.g. a module imported for the first time by the migrations).
        for name, logger in list(loggers.items()):
            if isinstance(logger, logging.Logger) and name not in disabled:
                logger.disabled = False
        root.handlers[:] = handlers
        root.setLevel(level)


# -- one lock for schema and seeds ---------------------------------------------------


def upgrade_head(settings: Settings, engine: Engine, conn: Connection, *,
                 commit: bool = True) -> list[str]:
    """Run the user's ``alembic upgrade head`` on ``conn``; returns the revisions it applied.

    The caller holds seedguard's locks: that is what makes concurrent deploys
    safe, since alembic itself has no lock. ``conn`` is passed to ``env.py``
    as ``config.attributes["connection"]`` (alembic's documented recipe) and
    ``sqlalchemy.url`` is set to the same database, so an ``env.py`` that
    builds its own engine migrates the same database; Flask-Migrate's
    ``env.py`` uses the app's engine, which is the one seedguard uses too.
    ``commit=False`` leaves everything in the caller's open transaction.
    """
    from alembic import command
    from alembic.util import CommandError

    config = find_config(settings)
    if config is None:
        raise ConfigError(f"schema=True / --schema needs your alembic scripts; {_WHERE}")
    script = script_directory(config)
    before = applied_revisions(script, current_heads(conn))
    if commit:
        conn.commit()  # so env.py begins (and commits) a transaction of its own on conn
    config.attributes["connection"] = conn
    # configparser interpolates "%": escape it so a URL-encoded password survives.
    # (Flask-Migrate's env.py sets this option itself, to the same engine's URL.)
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    log.info("running the user's alembic upgrade head (%s)", script.dir)
    try:
        from seedguard.ledger import ALEMBIC_RUNS

        with _loggers_kept(), ALEMBIC_RUNS:  # alembic's op/context are process-global
            command.upgrade(config, "head")
    except CommandError as err:
        raise ConfigError(f"alembic upgrade head failed: {err}; {_WHERE}") from err
    except Exception as err:
        from seedguard.connect import scrub

        if commit:
            conn.rollback()
        raise SeedguardError(
            f"your alembic upgrade head failed: {type(err).__name__}: "
            f"{scrub(str(err), engine.url)}; no seed ran. Fix the migration and run again"
        ) from err
    if commit:
        conn.commit()
    after = applied_revisions(script, current_heads(conn))
    if commit:
        conn.commit()
    applied = after - before
    # Oldest first, as alembic applied them.
    order = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    return [rev for rev in order if rev in applied]


__all__ = [
    "USER_VERSION_TABLE",
    "RevisionGate",
    "applied_revisions",
    "current_heads",
    "find_config",
    "ignore_ledger",
    "include_object",
    "ledger_tables",
    "script_directory",
    "upgrade_head",
]
