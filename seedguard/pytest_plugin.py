"""The pytest plugin: the project's seeds in the test database, applied once per run.

Registered through the ``pytest11`` entry point, so pytest imports this module
at start-up in every run where seedguard is installed. It therefore imports
nothing heavy at module level (no SQLAlchemy, no :mod:`seedguard.api`): all of
that happens inside the fixtures, so a suite that requests none of them pays
nothing and opens no connection. ``-p no:seedguard`` turns it off entirely.

Fixtures:

- ``seedguard_engine`` (session scope): an ``Engine`` on the test database,
  with the configured seeds applied. Every pytest-xdist worker calls
  :func:`seedguard.apply`; seedguard's file and database locks make the work
  happen exactly once per run, and a run with unchanged seeds does none.
- ``seedguard_session`` (function scope): a ``Session`` on a connection whose
  outer transaction is rolled back after the test; ``session.commit()`` in the
  test or the code under test only releases a SAVEPOINT (SQLAlchemy's "joining
  a Session into an external transaction" recipe).

Workers never block each other on SQLite: each xdist worker gets its own copy
of the seeded database file, made once after seeding. On PostgreSQL,
``--seedguard-clone`` gives each worker a database cloned from the seeded one
(``CREATE DATABASE ... TEMPLATE``), dropped at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.orm import Session

    from seedguard.config import Settings

__all__ = ["use_session"]

# PostgreSQL database names are at most 63 bytes; the clone's suffix needs 20.
_PG_NAME_MAX = 63


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "seedguard(contexts=[...]): run the seed units these contexts add inside the "
        "test's seedguard_session transaction, rolled back with it",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    # The settings the plugin offers come from seedguard's field list: the
    # option is the command's with a `seedguard-` prefix, the ini key the
    # setting's name with a `seedguard_` one (seedguard.settings).
    from seedguard.settings import FIELDS

    group = parser.getgroup("seedguard", "seedguard: a seeded test database")
    for setting in FIELDS:
        if not setting.pytest or setting.option is None:
            continue
        ini = f"seedguard_{setting.name}"
        group.addoption(
            "--seedguard-" + setting.option.removeprefix("--"), dest=ini,
            metavar=setting.metavar, default=None,
            action="append" if setting.multiple else "store",
            help=f"For the seedguard fixtures: {setting.summary}"
                 f"{'; repeatable' if setting.multiple else ''} (default: ini {ini}, then "
                 f"{setting.env}, then [tool.seedguard] {setting.name}).")
        text = f"seedguard: {setting.summary} for the seedguard fixtures."
        if setting.multiple:
            parser.addini(ini, text, type="args")
        else:
            parser.addini(ini, text)
    group.addoption(
        "--seedguard-clone", dest="seedguard_clone", action="store_true", default=None,
        help="PostgreSQL: run each worker's tests on its own database cloned from the "
             "seeded one (CREATE DATABASE ... TEMPLATE), dropped afterwards.")
    parser.addini("seedguard_clone", "seedguard: clone a database per worker (PostgreSQL).",
                  type="bool", default=False)


@pytest.fixture(scope="session")
def seedguard_engine(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An Engine on the test database with the configured seeds applied (once per run)."""
    with _one_line_failure():
        database = _TestDatabase.prepare(request.config, tmp_path_factory)
    try:
        yield database.engine
    finally:
        with _one_line_failure():
            database.close()


@pytest.fixture
def seedguard_session(request: pytest.FixtureRequest,
                      seedguard_engine: Engine) -> Iterator[Session]:
    """A Session whose work is rolled back after the test; its commits end only a SAVEPOINT.

    A test marked ``@pytest.mark.seedguard(contexts=["demo"])`` also gets the
    units those contexts add, run in this session before the test.
    """
    with _rolled_back_session(seedguard_engine) as session:
        marker = request.node.get_closest_marker("seedguard")
        if marker is not None:
            with _one_line_failure():
                _apply_marked_contexts(session, request.config, marker)
        yield session


@contextlib.contextmanager
def _rolled_back_session(engine: Engine) -> Iterator[Session]:
    """SQLAlchemy's "joining a Session into an external transaction" recipe."""
    from sqlalchemy.orm import Session

    connection = engine.connect()
    transaction = connection.begin()
    if connection.dialect.name == "sqlite" and connection.dialect.driver == "pysqlite":
        # pysqlite emits no BEGIN until the first INSERT/UPDATE/DELETE, so the
        # session's SAVEPOINT would open the transaction itself, and its
        # RELEASE (the test's commit) would commit to the file. Begin for real,
        # on this connection only: seedguard.apply() refuses a literal BEGIN on
        # a unit's connection, so the engine's own behaviour stays as it is.
        connection.exec_driver_sql("BEGIN")
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        if transaction.is_active:
            transaction.rollback()
        connection.close()


@contextlib.contextmanager
def use_session(target: Any, session: Session) -> Iterator[Session]:
    """Make the app's scoped session hand out ``session`` (``seedguard_session``) for a while.

    ``target``: a Flask-SQLAlchemy ``SQLAlchemy`` instance (its ``db.session``)
    or a plain ``sqlalchemy.orm.scoped_session``.
    ``session``: the session to hand out, normally ``seedguard_session``.

    Inside the block, ``db.session`` (or ``SessionLocal()``) *is* ``session``
    in every app context and thread, so views and services under test join the
    test's rolled-back transaction. Their ``commit()`` ends a SAVEPOINT. At the
    end of each request (``remove()``, called by Flask-SQLAlchemy's app-context
    teardown) the session's uncommitted work is rolled back, as closing the
    request's own session would have discarded it; it is not closed, so the
    test's objects stay usable. Afterwards the scoped session is as it was.
    """
    from sqlalchemy.orm import scoped_session

    scoped = target if isinstance(target, scoped_session) else getattr(target, "session", None)
    if not isinstance(scoped, scoped_session):
        raise TypeError(
            f"use_session() needs a Flask-SQLAlchemy SQLAlchemy instance or a scoped_session, "
            f"not {type(target).__name__}"
        )
    saved = scoped.registry
    scoped.registry = _pinned_registry(session)
    try:
        yield session
    finally:
        scoped.registry = saved


def _pinned_registry(session: Session) -> Any:
    from sqlalchemy.util import ScopedRegistry

    class PinnedRegistry(ScopedRegistry[Any]):
        """One session for every scope; ``clear()`` (from ``remove()``) only rolls back."""

        def __init__(self) -> None:
            super().__init__(lambda: session, lambda: None)

        def __call__(self) -> Any:
            return session

        def has(self) -> bool:
            # False keeps scoped_session.remove() from closing the test's session
            # (which would detach every object the test holds); it calls clear().
            return False

        def set(self, obj: Any) -> None:
            raise RuntimeError("use_session(): the scoped session is pinned to the test's session")

        def clear(self) -> None:
            if session.in_transaction():
                session.rollback()

    return PinnedRegistry()


@contextlib.contextmanager
def _one_line_failure() -> Iterator[None]:
    """A SeedguardError fails the fixture with its one-line message, not a traceback."""
    from seedguard.errors import SeedguardError

    try:
        yield
    except SeedguardError as err:
        # pytest.fail(..., pytrace=False), minus the chain of causes (driver
        # error, SQLAlchemy's wrapper) pytest would print above the message.
        raise pytest.fail.Exception(f"seedguard: {err}", pytrace=False) from None


class _TestDatabase:
    """The seeded database of this run and, per worker, the copy or clone the tests use."""

    def __init__(self, engine: Engine, cleanup: list[Any]) -> None:
        self.engine = engine
        self._cleanup = cleanup

    @classmethod
    def prepare(cls, config: pytest.Config,
                tmp_path_factory: pytest.TempPathFactory) -> _TestDatabase:
        settings = _settings(config)
        from sqlalchemy.engine import make_url

        # No URL but an engine: a Flask app context was active (config.resolve).
        url = make_url(settings.url) if settings.url else settings.engine.url  # type: ignore[union-attr]
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        clone = bool(_option(config, "seedguard_clone"))
        backend = url.get_backend_name()
        if backend == "sqlite":
            database = str(url.database or "")
            if (worker or clone) and database not in ("", ":memory:") \
                    and not database.startswith("file:"):
                return cls._sqlite_copy(url, settings, worker, tmp_path_factory)
            return cls._seeded(url, settings)
        if clone:
            if backend != "postgresql":
                from seedguard.errors import ConfigError

                raise ConfigError(
                    f"--seedguard-clone needs PostgreSQL (CREATE DATABASE ... TEMPLATE), not "
                    f"{backend}; drop the option, SQLite gets a copy per worker anyway"
                )
            return cls._pg_clone(url, settings, worker, tmp_path_factory)
        return cls._seeded(url, settings)

    @classmethod
    def _seeded(cls, url: URL, settings: Settings) -> _TestDatabase:
        engine = _engine(url)
        cleanup: list[Any] = [engine.dispose]
        try:
            _apply(engine, settings)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, cleanup)

    @classmethod
    def _sqlite_copy(cls, url: URL, settings: Settings, worker: str | None,
                     tmp_path_factory: pytest.TempPathFactory) -> _TestDatabase:
        import sqlite3

        seeded = _engine(url)
        try:
            _apply(seeded, settings)
        finally:
            seeded.dispose()
        # Once this worker's apply() returns every unit is committed, and no
        # applier writes the file again this run (the others find nothing to
        # do), so a copy made now is complete. sqlite3's backup API reads under
        # SQLite's own locking instead of copying bytes mid-write.
        source_path = Path(str(url.database))
        copy = tmp_path_factory.mktemp("seedguard") / f"{source_path.stem}-{worker or 'main'}.db"
        source = sqlite3.connect(str(source_path))
        try:
            target = sqlite3.connect(str(copy))
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        engine = _engine(url.set(database=str(copy)))
        return cls(engine, [engine.dispose])

    @classmethod
    def _pg_clone(cls, url: URL, settings: Settings, worker: str | None,
                  tmp_path_factory: pytest.TempPathFactory) -> _TestDatabase:
        import filelock

        from seedguard.connect import safe_url

        template = str(url.database or "")
        name = f"{template[:_PG_NAME_MAX - 20]}_sg_{worker or 'main'}_{uuid.uuid4().hex[:8]}"
        # CREATE DATABASE ... TEMPLATE refuses while any other session is
        # connected to the template, and every worker's apply() connects to it.
        # So under xdist the workers take turns (a file lock in the directory
        # xdist's workers share): apply, close every connection, clone.
        base = tmp_path_factory.getbasetemp()
        shared = base.parent if worker else base
        lock_path = shared / "seedguard-clone.lock"
        lock = filelock.FileLock(str(lock_path), timeout=(
            -1 if settings.lock_timeout is None else settings.lock_timeout))
        try:
            lock.acquire()
        except filelock.Timeout as err:
            from seedguard.errors import LockTimeout

            raise LockTimeout(
                f"timed out after {settings.lock_timeout:g} s waiting for another xdist worker "
                f"to clone {safe_url(url)} (lock {lock_path}); raise lock_timeout",
                lock=str(lock_path), holder="another xdist worker",
            ) from err
        try:
            seeded = _engine(url)
            try:
                _apply(seeded, settings)
                seeded.dispose()
                with _admin(seeded) as admin:
                    quote = seeded.dialect.identifier_preparer.quote
                    admin.exec_driver_sql(
                        f"CREATE DATABASE {quote(name)} TEMPLATE {quote(template)}")
            finally:
                seeded.dispose()
        finally:
            lock.release()
        engine = _engine(url.set(database=name))

        def drop() -> None:
            engine.dispose()
            with _admin(seeded) as admin:
                # FORCE: a connection the code under test leaked must not keep
                # the clone alive after the run.
                admin.exec_driver_sql(
                    f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
            seeded.dispose()

        return cls(engine, [drop])

    def close(self) -> None:
        for step in self._cleanup:
            step()


@contextlib.contextmanager
def _admin(engine: Engine) -> Iterator[Any]:
    """An AUTOCOMMIT connection for CREATE/DROP DATABASE, with errors as ConfigError."""
    from sqlalchemy.exc import DBAPIError

    from seedguard.connect import connect, safe_url, scrub
    from seedguard.errors import ConfigError

    with connect(engine) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield conn
        except DBAPIError as err:
            raise ConfigError(
                f"cannot clone or drop a database on {safe_url(engine.url)}: "
                f"{scrub(str(err.orig), engine.url)}; the seeded database must have no other "
                "connections while it is cloned"
            ) from err


def _settings(config: pytest.Config) -> Settings:
    """Command line beats the ini file, which beats SEEDGUARD_* and [tool.seedguard]."""
    from seedguard import config as sg_config
    from seedguard.errors import ConfigError
    from seedguard.settings import FIELDS

    given = {setting.name: _option(config, f"seedguard_{setting.name}")
             for setting in FIELDS if setting.pytest}
    if given.get("contexts"):
        given["contexts"] = [part for item in given["contexts"] for part in item.split(",")]
    settings = sg_config.resolve(given.pop("url", None), **given)
    if settings.url is None and settings.engine is None:
        raise ConfigError(
            "no database for the seedguard fixtures: pass --seedguard-url, set seedguard_url in "
            "the pytest ini file, set SEEDGUARD_URL, or add `url = \"...\"` under "
            "[tool.seedguard] in pyproject.toml"
        )
    # As `seedguard` and `python -m pytest` do: seeds modules in the directory
    # pytest was started from are importable, also under the `pytest` script.
    invocation = str(config.invocation_params.dir)
    if invocation not in sys.path:
        sys.path.append(invocation)
    return settings


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    if value in (None, [], ""):
        value = config.getini(name)
    return value if value not in ([], "") else None


def _engine(url: URL) -> Engine:
    from seedguard.connect import create

    engine = create(url.render_as_string(hide_password=False))
    if getattr(engine.dialect, "is_async", False):
        from seedguard.connect import safe_url
        from seedguard.errors import ConfigError

        engine.dispose()
        raise ConfigError(
            f"the seedguard fixtures are synchronous, and {safe_url(url)} names an async "
            "driver; use a sync one for the tests (postgresql+psycopg, sqlite, mysql+pymysql)"
        )
    return engine


def _apply(engine: Engine, settings: Settings) -> None:
    from seedguard.api import apply

    apply(engine, seeds=settings.seeds, contexts=settings.contexts)


def _apply_marked_contexts(session: Session, config: pytest.Config, marker: pytest.Mark) -> None:
    """Run the units a ``seedguard(contexts=[...])`` marker adds to the run's selection.

    They run in the test's transaction, in order, each ending with a commit
    (a SAVEPOINT), and are rolled back with the test; the ledger is not
    written, as nothing of theirs outlives the test.
    """
    import dataclasses

    from seedguard.api import select
    from seedguard.errors import ConfigError

    contexts = marker.kwargs.get("contexts")
    if marker.args or set(marker.kwargs) != {"contexts"} or isinstance(contexts, str) \
            or not contexts:
        raise ConfigError(
            "the seedguard marker takes one argument, a list of context names: "
            "@pytest.mark.seedguard(contexts=[\"demo\"])"
        )
    settings = _settings(config)
    applied = {unit.name for unit in select(settings)}
    wider = dataclasses.replace(settings, contexts=(*settings.contexts, *map(str, contexts)))
    for unit in select(wider):
        if unit.name not in applied:
            unit(session)
            session.commit()
