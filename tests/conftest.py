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

import collections
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase

from seedguard.registry import default_registry

# A run started in the background by a non-interactive shell (`scripts/test &`)
# has SIGINT and SIGQUIT ignored (POSIX: asynchronous commands without job
# control), and every child inherits that: a child Python then installs no
# KeyboardInterrupt handler, and the tests that press Ctrl-C on a seedguard
# process waited out their timeout. Give children SIGINT as a terminal does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN \
        and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


class _Lane:
    """Jobs run in order on a thread that exists only while there is work."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs.popleft()
            job()

    def wait(self) -> None:
        """Return once every job is done and the thread has exited."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return
            thread.join(timeout=300)
            if thread.is_alive():
                return  # a hung server: let the caller go on (and fail) rather than hang


class _ServerDatabases:
    """Fresh server databases made before a test asks and dropped after it, off its clock.

    PostgreSQL 15's DROP DATABASE waits for an immediate checkpoint and its
    CREATE DATABASE writes the template through the WAL; MariaDB's create and
    drop fsync files. Done inline that cost a second or more per server-backed
    test on a loaded machine, before and after its own work. Background
    threads keep one spare database of each kind ready and drop the used ones
    (two lanes, so a slow drop never delays the next spare); every test still
    gets a database nobody else has touched.

    The threads exist only while there is work, and ``os.fork()`` waits until
    they have finished and exited: a forked child (the fault trials fork
    appliers) must not inherit a lock such a thread held, and Python 3.12+
    warns about forking a process with threads.
    """

    def __init__(self) -> None:
        self._creates = _Lane("sg-create-databases")
        self._drops = _Lane("sg-drop-databases")
        self._spares: dict[str, _Spare] = {}
        os.register_at_fork(before=self.wait)

    def wait(self) -> None:
        self._creates.wait()
        self._drops.wait()

    def take(self, kind: str) -> tuple[str, str]:
        """A fresh database of ``kind`` (url, name); the next one is made in the background."""
        spare = self._spares.pop(kind, None)
        made = spare.result() if spare is not None else None
        if made is None:
            made = _create_server_database(kind)  # its error, if any, reaches the test
        spare = self._spares[kind] = _Spare()
        self._creates.submit(lambda: spare.make(kind))
        return made

    def give_back(self, kind: str, name: str) -> None:
        self._drops.submit(lambda: _drop_quietly(kind, name))

    def close(self) -> None:
        """Drop the spares and wait for every drop (the end of the session)."""
        for kind, spare in self._spares.items():
            made = spare.result()
            if made is not None:
                self.give_back(kind, made[1])
        self._spares.clear()
        self.wait()


class _Spare:
    """A database being made in the background; ``result()`` waits for it (None if it failed)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._made: tuple[str, str] | None = None

    def make(self, kind: str) -> None:
        try:
            self._made = _create_server_database(kind)
        except Exception:
            self._made = None
        finally:
            self._done.set()

    def result(self) -> tuple[str, str] | None:
        self._done.wait(timeout=300)
        return self._made


def _drop_quietly(kind: str, name: str) -> None:
    try:
        _drop_server_database(kind, name)
    except Exception as err:  # a leftover database; the test itself is over
        print(f"seedguard tests: could not drop {kind} database {name}: {err}", file=sys.stderr)


_server_databases = _ServerDatabases()


def pytest_unconfigure(config: pytest.Config) -> None:
    _server_databases.close()


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
    url, name = _server_databases.take(kind)
    database = TestDatabase(kind, url, tmp_path)
    try:
        yield database
    finally:
        database.dispose()
        _server_databases.give_back(kind, name)


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
