"""One fixture, ``db``, runs a test on SQLite (a file in tmp), PostgreSQL and MariaDB.

Each test gets a database of its own (``CREATE DATABASE sg_<random>``), so
tests, and several developers' runs on one machine, never see each other's
ledgers or locks. Which databases run: ``SEEDGUARD_TEST_DATABASES``
(comma-separated, default all three). Server URLs: ``SEEDGUARD_TEST_PG_URL``
and ``SEEDGUARD_TEST_MYSQL_URL``. The tests of a database that is not selected,
or of a server that cannot be reached, are deselected at collection with one
line per database in the summary (not one skip line per test); with
``SEEDGUARD_TEST_REQUIRE_SERVERS=1`` (as in CI) an unreachable server fails
its tests instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase

from seedguard.registry import default_registry

PG_URL = os.environ.get("SEEDGUARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("SEEDGUARD_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
ALL_DATABASES = ("sqlite", "postgresql", "mariadb")
SERVER_URLS = {"postgresql": PG_URL, "mariadb": MYSQL_URL}


def selected_databases() -> list[str]:
    raw = os.environ.get("SEEDGUARD_TEST_DATABASES", ",".join(ALL_DATABASES))
    chosen = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = set(chosen) - set(ALL_DATABASES)
    if unknown:
        raise pytest.UsageError(f"SEEDGUARD_TEST_DATABASES: unknown {sorted(unknown)}")
    return chosen


def require_servers() -> bool:
    return os.environ.get("SEEDGUARD_TEST_REQUIRE_SERVERS") == "1"


_reachable: dict[str, str | None] = {}


def server_problem(kind: str) -> str | None:
    """None if the server answers, else a one-line reason (checked once per session)."""
    if kind not in _reachable:
        engine = sa.create_engine(SERVER_URLS[kind], connect_args=_connect_timeout(kind))
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[kind] = None
        except Exception as err:
            first = str(getattr(err, "orig", err)).strip().splitlines()[0]
            _reachable[kind] = f"{kind} not reachable at {SERVER_URLS[kind]}: {first}"
        finally:
            engine.dispose()
    return _reachable[kind]


def need_server(kind: str) -> None:
    """Skip (or, with SEEDGUARD_TEST_REQUIRE_SERVERS=1, fail) when ``kind``'s server is down."""
    problem = server_problem(kind)
    if problem is None:
        return
    if require_servers():
        pytest.fail(problem + " (SEEDGUARD_TEST_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(problem)


def _kind_of(item: pytest.Item) -> str | None:
    """The database an item runs on, when a fixture of this module chooses it."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for name in ("db", "server_db"):
            if name in callspec.params:
                return str(callspec.params[name])
    if "pg" in getattr(item, "fixturenames", ()):
        return "postgresql"
    return None


_LEFT_OUT = pytest.StashKey[dict[tuple[str, str], int]]()


@pytest.hookimpl(trylast=True)  # after -k/-m, so the counts are of tests that would run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of unselected databases and unreachable servers, counting them."""
    chosen = selected_databases()
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    left_out: dict[tuple[str, str], int] = {}
    for item in items:
        kind = _kind_of(item)
        reason = None
        if kind is not None and kind not in chosen:
            reason = "not in SEEDGUARD_TEST_DATABASES"
        elif kind in SERVER_URLS and not require_servers():
            reason = server_problem(kind)
        if reason is None:
            kept.append(item)
        else:
            dropped.append(item)
            key = (kind or "", reason)
            left_out[key] = left_out.get(key, 0) + 1
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    config.stash[_LEFT_OUT] = left_out


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist the workers collect (and deselect), not the controller:
    # each worker hands its counts back, for the controller's summary.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        left_out = session.config.stash.get(_LEFT_OUT, {})
        workeroutput["seedguard_left_out"] = [[kind, reason, count]
                                              for (kind, reason), count in left_out.items()]


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, on the controller
def pytest_testnodedown(node: Any, error: object) -> None:
    found = getattr(node, "workeroutput", {}).get("seedguard_left_out")
    if found is not None:
        # Every worker collects the same tests: one worker's counts are the run's.
        node.config.stash[_LEFT_OUT] = {(kind, reason): count for kind, reason, count in found}


def run_with() -> list[str]:
    """What this run tests against, for the header and the summary: the databases and
    the optional libraries that change what is exercised (Werkzeug's reloader)."""
    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        reloaders = "stat only (watchdog not installed: its reloader tests skip)"
    else:
        reloaders = "stat and watchdog"
    return [f"seedguard tests: databases {', '.join(selected_databases())}; "
            f"Werkzeug reloaders {reloaders}"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return run_with()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in run_with():
        terminalreporter.write_line(line)
    for (kind, reason), count in sorted(terminalreporter.config.stash.get(_LEFT_OUT, {}).items()):
        if kind in SERVER_URLS and reason != "not in SEEDGUARD_TEST_DATABASES":
            reason += " (SEEDGUARD_TEST_REQUIRE_SERVERS=1 fails them instead)"
        terminalreporter.write_line(f"{kind}: {count} test(s) deselected: {reason}")


def _connect_timeout(kind: str) -> dict[str, int]:
    return {"connect_timeout": 5}


def _create_server_database(kind: str) -> tuple[str, str]:
    """Create a fresh database on ``kind``'s server; returns (url, name)."""
    name = f"sg_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER_URLS[kind], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    url = sa.engine.make_url(SERVER_URLS[kind]).set(database=name)
    return url.render_as_string(hide_password=False), name


def _drop_server_database(kind: str, name: str) -> None:
    admin = sa.create_engine(SERVER_URLS[kind], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    finally:
        admin.dispose()


@pytest.fixture(params=ALL_DATABASES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestDatabase]:
    """A fresh, empty database of each kind; see the module docstring."""
    kind: str = request.param
    if kind not in selected_databases():
        pytest.skip(f"{kind} not in SEEDGUARD_TEST_DATABASES")
    yield from make_database(kind, tmp_path)


def make_database(kind: str, tmp_path: Path) -> Iterator[TestDatabase]:
    """The body of ``db``, for fixtures that want one kind only."""
    if kind == "sqlite":
        database = TestDatabase(kind, f"sqlite:///{tmp_path / 'test.db'}", tmp_path)
        yield database
        database.dispose()
        return
    need_server(kind)
    url, name = _create_server_database(kind)
    database = TestDatabase(kind, url, tmp_path)
    try:
        yield database
    finally:
        database.dispose()
        _drop_server_database(kind, name)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[TestDatabase]:
    """A fresh PostgreSQL database only."""
    yield from make_database("postgresql", tmp_path)


@pytest.fixture
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestDatabase]:
    """PostgreSQL and MariaDB: for behaviour that SQLite cannot have (database locks)."""
    kind: str = request.param
    if kind not in selected_databases():
        pytest.skip(f"{kind} not in SEEDGUARD_TEST_DATABASES")
    yield from make_database(kind, tmp_path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server_db" in metafunc.fixturenames:
        metafunc.parametrize("server_db", ["postgresql", "mariadb"], indirect=True)


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test declares into an empty default registry, and no SEEDGUARD_* leaks in."""
    for key in list(os.environ):
        if key.startswith("SEEDGUARD_") and not key.startswith("SEEDGUARD_TEST_"):
            monkeypatch.delenv(key)
    saved = list(default_registry)
    default_registry.clear()
    yield
    default_registry.clear()
    for unit in saved:
        default_registry.add(unit)
