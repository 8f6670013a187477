"""The pytest plugin, run the way users run it: pytest in a subprocess on a small project.

The child is ``python -m pytest`` of the venv the wheel is installed in, so the
plugin is loaded through the wheel's ``pytest11`` entry point, never by ``-p``.
Schema comes first (as migrations would), written by the test; the seeds
module fills it and appends a line to a side-effect file each time a unit
really runs, so "exactly once" is counted outside the database too.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase

SEEDS = '''
import os

import sqlalchemy as sa

import seedguard


def _effect(name):
    with open(os.environ["SG_EFFECTS"], "a") as fh:
        fh.write(name + "\\n")


@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO roles (name) VALUES ('admin'), ('user')"))
    _effect("roles")


@seedguard.seed("demo-users", after=["roles"], contexts=["demo"])
def demo_users(session):
    session.execute(sa.text("INSERT INTO users (email) VALUES ('demo@example.com')"))
    _effect("demo-users")
'''

ISOLATION_TESTS = '''
import os

import pytest
import sqlalchemy as sa


def _database(session):
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return session.execute(sa.text("PRAGMA database_list")).all()[0][2]
    if dialect == "postgresql":
        return session.execute(sa.text("SELECT current_database()")).scalar_one()
    return session.execute(sa.text("SELECT DATABASE()")).scalar_one()


@pytest.mark.parametrize("n", range(8))
def test_seeded_and_isolated(seedguard_session, n):
    session = seedguard_session
    names = session.execute(sa.text("SELECT name FROM roles ORDER BY name")).scalars().all()
    assert names == ["admin", "user"]
    # Every test inserts and commits; none may see another's row.
    assert session.execute(sa.text("SELECT COUNT(*) FROM users")).scalar_one() == 0
    session.execute(sa.text("INSERT INTO users (email) VALUES (:e)"), {"e": f"u{n}@example.com"})
    session.commit()
    assert session.execute(sa.text("SELECT COUNT(*) FROM users")).scalar_one() == 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.environ["SG_RECORD"], "a") as fh:
        fh.write(f"{worker} {_database(session)}\\n")
'''

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SCHEMA = (
    "CREATE TABLE roles (name VARCHAR(50) PRIMARY KEY)",
    "CREATE TABLE users (email VARCHAR(100) PRIMARY KEY)",
)


class Project:
    """A throwaway project in tmp: files, a side-effect log, and a way to run pytest on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.effects = root / "effects.log"
        self.record = root / "record.log"

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def ini(self, **keys: str) -> None:
        lines = ["[pytest]", "filterwarnings = error", "addopts = -p no:cacheprovider"]
        lines += [f"{key} = {value}" for key, value in keys.items()]
        self.write("pytest.ini", "\n".join(lines) + "\n")

    def pytest(self, *args: str, env: dict[str, str] | None = None,
               timeout: float = 90) -> subprocess.CompletedProcess[str]:
        child = {key: value for key, value in os.environ.items()
                 if not key.startswith(("SEEDGUARD_", "PYTEST_"))}
        child.update(SG_EFFECTS=str(self.effects), SG_RECORD=str(self.record))
        child.update(env or {})
        return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=self.root,
                              env=child, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def effect_lines(self) -> list[str]:
        return self.effects.read_text().split() if self.effects.exists() else []

    def records(self) -> list[tuple[str, str]]:
        if not self.record.exists():
            return []
        pairs = [line.split(" ", 1) for line in self.record.read_text().splitlines()]
        return [(worker, database) for worker, database in pairs]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    made = Project(root)
    made.write("seeds.py", SEEDS)
    return made


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _count(db: TestDatabase, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


def test_seeds_applied_once_across_four_workers_and_tests_isolated(
        db: TestDatabase, project: Project) -> None:
    for statement in SCHEMA:
        db.execute(statement)
    project.ini(seedguard_url=db.url, seedguard_seeds="seeds")
    project.write("test_isolation.py", ISOLATION_TESTS)

    done = project.pytest("-n", "4", "-q")
    assert done.returncode == 0, _output(done)
    assert "8 passed" in done.stdout, _output(done)
    # Four workers each asked for the seeds; the unit ran once.
    assert project.effect_lines() == ["roles"]
    assert db.ledger() == [("roles", 1)]
    # Every test committed a user; none reached the database.
    assert _count(db, "users") == 0
    assert _count(db, "roles") == 2
    records = project.records()
    workers = {worker for worker, _ in records}
    assert len(records) == 8 and len(workers) >= 2, records
    databases = {worker: {d for w, d in records if w == worker} for worker in workers}
    assert all(len(seen) == 1 for seen in databases.values()), databases
    if db.kind == "sqlite":
        # Each worker on its own copy of the seeded file, never on the file itself.
        copies = [seen.pop() for seen in databases.values()]
        assert len(set(copies)) == len(workers), databases
        seeded = str(sa.engine.make_url(db.url).database)
        assert all(Path(copy) != Path(seeded) for copy in copies), databases

    # A second run, no xdist: nothing to apply, tests still isolated.
    project.record.unlink()
    again = project.pytest("-q")
    assert again.returncode == 0, _output(again)
    assert "8 passed" in again.stdout, _output(again)
    assert project.effect_lines() == ["roles"]
    assert _count(db, "users") == 0


def test_command_line_beats_ini_beats_seedguard_configuration_and_marker(
        project: Project) -> None:
    root = project.root

    def seeded(name: str) -> list[str]:
        engine = sa.create_engine(f"sqlite:///{root / name}")
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("seedguard_ledger"):
                    return []
                return sorted(conn.execute(sa.text("SELECT name FROM seedguard_ledger")).scalars())
        finally:
            engine.dispose()

    for name in ("a.db", "b.db", "c.db"):
        engine = sa.create_engine(f"sqlite:///{root / name}")
        with engine.begin() as conn:
            for statement in SCHEMA:
                conn.execute(sa.text(statement))
        engine.dispose()
    project.write("test_one.py", """
        import os

        import pytest
        import sqlalchemy as sa

        DEMO = "SELECT COUNT(*) FROM users WHERE email = 'demo@example.com'"


        @pytest.mark.seedguard(contexts=["demo"])
        def test_marked(seedguard_session):
            assert seedguard_session.execute(sa.text(DEMO)).scalar_one() == 1


        def test_unmarked(seedguard_session):
            with open(os.environ["SG_RECORD"], "a") as fh:
                fh.write(f"unmarked {seedguard_session.execute(sa.text(DEMO)).scalar_one()}\\n")
    """)
    # Seeds from [tool.seedguard] (the usual configuration, as nothing else names
    # them); the ini's URL and contexts beat [tool.seedguard]'s.
    project.write("pyproject.toml", f"""
        [tool.seedguard]
        url = "sqlite:///{root / 'a.db'}"
        seeds = "seeds"
        contexts = ["other"]
    """)
    project.ini(seedguard_url=f"sqlite:///{root / 'b.db'}", seedguard_contexts="demo")
    done = project.pytest("-q")
    assert done.returncode == 0, _output(done)
    assert (seeded("a.db"), seeded("b.db")) == ([], ["demo-users", "roles"])
    assert project.effect_lines() == ["roles", "demo-users"]

    # The command line beats the ini, contexts included.
    done = project.pytest("-q", "--seedguard-url", f"sqlite:///{root / 'c.db'}",
                          "--seedguard-context", "other", "--seedguard-context", "more")
    assert done.returncode == 0, _output(done)
    assert (seeded("a.db"), seeded("c.db")) == ([], ["roles"])
    # The marker ran demo-users inside test_marked's transaction only: its
    # side effect happened, its rows and ledger entry did not outlive the test.
    assert project.effect_lines() == ["roles", "demo-users", "roles", "demo-users"]
    assert project.records() == [("unmarked", "1"), ("unmarked", "0")]


def test_help_lists_the_options_and_ini_keys(project: Project) -> None:
    project.ini()
    done = project.pytest("--help")
    assert done.returncode == 0, _output(done)
    for name in ("--seedguard-url=URL", "--seedguard-seeds=MODULE", "--seedguard-context=NAME",
                 "--seedguard-clone", "seedguard_url", "seedguard_seeds", "seedguard_contexts",
                 "seedguard_clone"):
        assert name in done.stdout, name


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


def test_a_suite_without_seedguard_fixtures_pays_nothing(project: Project,
                                                         listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    project.ini(seedguard_url=f"postgresql+psycopg://app@127.0.0.1:{port}/app",
                seedguard_seeds="seeds")
    project.write("conftest.py", """
        import os
        import sys

        def pytest_sessionfinish(session):
            loaded = [name for name in sys.modules if name.split(".")[0] == "sqlalchemy"]
            with open(os.environ["SG_RECORD"], "w") as fh:
                fh.write(f"plugin {'seedguard.pytest_plugin' in sys.modules}\\n")
                fh.write(f"sqlalchemy {len(loaded)}\\n")
    """)
    project.write("test_plain.py", """
        def test_plain():
            assert 1 + 1 == 2
    """)
    done = project.pytest("-q")
    assert done.returncode == 0, _output(done)
    # The plugin was loaded (from the entry point), and loaded no SQLAlchemy ...
    assert project.records() == [("plugin", "True"), ("sqlalchemy", "0")]
    # ... and nobody knocked on the configured server.
    readable, _, _ = select.select([listener], [], [], 0)
    assert readable == []


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error_block(output: str) -> list[str]:
    """The lines of the first ERROR report section, without its header."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "ERROR at setup of" in line)
    block = []
    for line in lines[start + 1:]:
        if line.startswith(("=", "_")):
            break
        block.append(line)
    return [line for line in block if line.strip()]


def test_unreachable_or_missing_database_fails_with_one_line(project: Project) -> None:
    project.write("test_db.py", """
        def test_one(seedguard_session):
            pass

        def test_two(seedguard_engine):
            pass
    """)
    port = _closed_port()
    project.ini(seedguard_url=f"postgresql+psycopg://app:s3cret@127.0.0.1:{port}/app")
    done = project.pytest("-q")
    out = _output(done)
    assert done.returncode == 1, out
    assert "2 errors" in done.stdout, out
    block = _error_block(done.stdout)
    assert len(block) == 1, out
    assert block[0].startswith(
        f"seedguard: cannot connect to postgresql+psycopg://app:***@127.0.0.1:{port}/app: "), out
    assert "s3cret" not in out
    assert "Traceback" not in out and "site-packages" not in out, out

    project.ini()
    done = project.pytest("-q")
    out = _output(done)
    assert done.returncode == 1, out
    block = _error_block(done.stdout)
    assert block == [
        "seedguard: no database for the seedguard fixtures: pass --seedguard-url, set "
        "seedguard_url in the pytest ini file, set SEEDGUARD_URL, or add `url = \"...\"` under "
        "[tool.seedguard] in pyproject.toml"
    ], out


def test_clone_gives_each_postgresql_worker_its_own_database(pg: TestDatabase,
                                                             project: Project) -> None:
    for statement in SCHEMA:
        pg.execute(statement)
    template = str(sa.engine.make_url(pg.url).database)
    project.ini(seedguard_url=pg.url, seedguard_seeds="seeds")
    project.write("test_isolation.py", ISOLATION_TESTS.replace("range(8)", "range(4)"))

    done = project.pytest("-n", "2", "-q", "--seedguard-clone")
    assert done.returncode == 0, _output(done)
    assert "4 passed" in done.stdout, _output(done)
    assert project.effect_lines() == ["roles"]
    records = project.records()
    workers = {worker for worker, _ in records}
    databases = {database for _, database in records}
    assert len(workers) == 2 and len(databases) == 2, records
    assert all(len({d for w, d in records if w == worker}) == 1 for worker in workers), records
    assert template not in databases
    assert all(database.startswith(f"{template}_sg_gw") for database in databases), records
    # Every clone is gone afterwards.
    left = pg.execute("SELECT datname FROM pg_database WHERE datname LIKE :p",
                      p=f"{template}_sg_%")
    assert left == []
    assert _count(pg, "users") == 0


def test_clone_refused_on_mariadb(project: Project, tmp_path: Path) -> None:
    project.ini(seedguard_url="mysql+pymysql://root@127.0.0.1:1/nothing")
    project.write("test_db.py", """
        def test_one(seedguard_engine):
            pass
    """)
    done = project.pytest("-q", "--seedguard-clone")
    assert done.returncode == 1, _output(done)
    assert _error_block(done.stdout) == [
        "seedguard: --seedguard-clone needs PostgreSQL (CREATE DATABASE ... TEMPLATE), not "
        "mysql; drop the option, SQLite gets a copy per worker anyway"
    ], _output(done)


def test_example_project_plain_sqlalchemy_and_flask(tmp_path: Path) -> None:
    """The README's example project passes under xdist: services and Flask views that
    commit, db.session joined to the test's transaction, nothing left behind."""
    root = tmp_path / "testing"
    shutil.copytree(EXAMPLES / "testing", root)
    example = Project(root)
    done = example.pytest("-n", "2", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, _output(done)
    assert "6 passed" in done.stdout, _output(done)
    engine = sa.create_engine(f"sqlite:///{root / 'test.db'}")
    try:
        with engine.connect() as conn:
            ledger = sorted(conn.execute(sa.text("SELECT name FROM seedguard_ledger")).scalars())
            users = conn.execute(sa.text("SELECT COUNT(*) FROM users")).scalar_one()
    finally:
        engine.dispose()
    assert (ledger, users) == (["roles", "schema"], 0)
    # The app's own database was never touched.
    assert not (root / "shop.db").exists()


def test_use_session_pins_a_plain_scoped_session(db: TestDatabase) -> None:
    """In-process: ``use_session`` on a plain scoped_session, as app code would use it."""
    from sqlalchemy.orm import scoped_session, sessionmaker

    from seedguard.pytest_plugin import _rolled_back_session, use_session

    db.execute("CREATE TABLE users (email VARCHAR(100) PRIMARY KEY)")
    engine = sa.create_engine(db.url)
    session_local = scoped_session(sessionmaker(engine))
    insert = sa.text("INSERT INTO users (email) VALUES (:e)")
    count = sa.text("SELECT COUNT(*) FROM users")
    try:
        # The body of the seedguard_session fixture.
        with _rolled_back_session(engine) as test_session:
            with use_session(session_local, test_session):
                # Code under test: its session is the test's, in any thread.
                assert session_local() is test_session
                session_local.execute(insert, {"e": "kept@example.com"})
                session_local.commit()
                session_local.execute(insert, {"e": "dropped@example.com"})
                # End of a request: what was not committed is gone, the session lives on.
                session_local.remove()
                assert test_session.execute(count).scalar_one() == 1
            assert session_local() is not test_session
            session_local.remove()
        # The committed row was only a SAVEPOINT inside the rolled-back transaction.
        assert db.execute("SELECT COUNT(*) FROM users")[0][0] == 0
    finally:
        engine.dispose()
