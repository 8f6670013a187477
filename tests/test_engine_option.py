"""``--engine MODULE:ATTR`` / ``SEEDGUARD_ENGINE`` / ``[tool.seedguard] engine``: the command
imports the app's own ``Engine`` or ``AsyncEngine`` (as ``flask --app`` imports an app) and
runs on it; what cannot be imported is named, exit 2.

Each test runs the real ``seedguard`` command in the folder of a template-shaped FastAPI +
SQLModel app (``_sqlmodel_app``), whose ``app.core.db`` builds its engine from
``DATABASE_URL`` and logs each connection it opens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _sqlmodel_app import write_app
from _support import TestDatabase, async_url, child_env

SCRIPT = str(Path(sys.executable).with_name("seedguard"))
ENGINE = "app.core.db:engine"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    write_app(folder, "app")
    return folder


def _env(db: TestDatabase, folder: Path, **extra: str) -> dict[str, str]:
    # No PYTHONPATH to the app: the command finds it in the current directory.
    env = child_env()
    for key in list(env):
        if key.startswith("SEEDGUARD") and not key.startswith("SEEDGUARD_TEST_"):
            del env[key]
    env.update({"DATABASE_URL": db.url, "ASYNC_DATABASE_URL": async_url(db),
                "CONNECT_LOG": str(folder / "connects.log"), **extra})
    return env


def _run(args: list[str], folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _users(db: TestDatabase) -> list[str]:
    table = '"user"' if db.kind == "postgresql" else "user"
    return [row[0] for row in db.execute(f"SELECT email FROM {table} ORDER BY id")]


def _connections(folder: Path) -> int:
    log = folder / "connects.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_upgrade_runs_on_the_apps_engine(db: TestDatabase, project: Path) -> None:
    env = _env(db, project)

    done = _run(["--engine", ENGINE, "upgrade", "--seeds", "app.seeds"], project, env)

    assert done.returncode == 0, done.stderr
    assert "applied 2 unit(s)" in done.stdout
    assert _users(db) == ["admin@example.com"]
    assert db.ledger() == [("first-superuser", 1), ("tables", 1)]
    # Through the app's engine: its connect listener saw the command's connections.
    assert _connections(project) >= 1
    # After the verb too, like every global option; nothing left to do.
    again = _run(["status", "--seeds", "app.seeds", "--engine", ENGINE], project, env)
    assert again.returncode == 0, again.stderr
    assert "applied" in again.stdout and "first-superuser" in again.stdout


def test_the_apps_url_normalisation_is_the_apps(pg: TestDatabase, project: Path) -> None:
    """DATABASE_URL as hosts hand it out (postgres://), which SQLAlchemy cannot parse:
    the app fixes it up, and the command uses the app's engine."""
    url = pg.url.replace("postgresql+psycopg://", "postgres://")
    env = _env(pg, project, DATABASE_URL=url, SEEDGUARD_ENGINE=ENGINE,
               SEEDGUARD_SEEDS="app.seeds")

    done = _run(["upgrade"], project, env)

    assert done.returncode == 0, done.stderr
    assert _users(pg) == ["admin@example.com"]
    assert "postgres://" not in done.stdout + done.stderr


def test_pyproject_engine_key(tmp_path: Path, project: Path) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    (project / "pyproject.toml").write_text(
        '[tool.seedguard]\nengine = "app.core.db:engine"\nseeds = "app.seeds"\n')

    done = _run(["upgrade", "--json"], project, _env(db, project))

    assert done.returncode == 0, done.stderr
    assert _users(db) == ["admin@example.com"]
    assert _connections(project) >= 1


def test_async_engine_runs_async_units(db: TestDatabase, project: Path) -> None:
    env = _env(db, project)

    done = _run(["upgrade", "--engine", "app.core.adb:engine", "--seeds", "app.aseeds"],
                project, env)

    assert done.returncode == 0, done.stderr
    assert "applied 2 unit(s)" in done.stdout
    assert _users(db) == ["admin@example.com"]
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ("nowhere.db:engine", "engine 'nowhere.db:engine' (--engine): no module named 'nowhere'"),
    ("app.core.db:engin", "engine 'app.core.db:engin' (--engine): module app.core.db has no "
                          "attribute 'engin'; engines there: engine"),
    ("app.core.db:database_url", "engine 'app.core.db:database_url' (--engine): "
                                 "app.core.db.database_url is a function, not a SQLAlchemy "
                                 "Engine or AsyncEngine"),
    ("app.core.db", "engine 'app.core.db' (--engine): expected MODULE:ATTR"),
])
def test_what_cannot_be_imported_is_named(tmp_path: Path, project: Path, spec: str,
                                          message: str) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)

    done = _run(["upgrade", "--seeds", "app.seeds", "--engine", spec], project, _env(db, project))

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: {message}"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "app.db").exists()


def test_a_failing_import_is_named_with_its_error(tmp_path: Path, project: Path) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    env = _env(db, project)
    del env["DATABASE_URL"]  # app.core.db reads os.environ["DATABASE_URL"]

    done = _run(["upgrade", "--seeds", "app.seeds"], project,
                {**env, "SEEDGUARD_ENGINE": ENGINE})

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: engine 'app.core.db:engine' (SEEDGUARD_ENGINE): importing app.core.db failed: "
        "KeyError: 'DATABASE_URL'"), done.stderr


def test_url_and_engine_together_are_refused(tmp_path: Path, project: Path) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)

    done = _run(["upgrade", "--seeds", "app.seeds", "--engine", ENGINE, "--url", db.url],
                project, _env(db, project))

    assert done.returncode == 2
    assert "are both given" in done.stderr and "drop one" in done.stderr


def _escape(db: TestDatabase, project: Path, database: list[str]) -> None:
    """The template's initial_data.init() writes with ``Session(engine)`` on the app's
    module-level engine: inside a unit run by the command, that write is refused before it
    runs, and the unit's failure leaves nothing behind."""
    done = _run([*database, "upgrade", "--seeds", "app.seeds"], project,
                _env(db, project, SG_ESCAPE="1"))

    assert done.returncode == 1, done.stderr
    assert "UnitEscape" in done.stderr, done.stderr
    assert _users(db) == []
    assert db.ledger() == [("tables", 1)]  # applied before the failing unit


def test_a_write_through_the_module_level_engine_is_refused_under_the_cli(
        db: TestDatabase, project: Path) -> None:
    # With --engine the module-level engine is the one the command runs on.
    _escape(db, project, ["--engine", ENGINE])


def test_a_write_through_the_module_level_engine_is_refused_under_the_cli_with_url(
        db: TestDatabase, project: Path) -> None:
    # With --url the command makes an engine of its own: the app's is another one.
    _escape(db, project, ["--url", db.url])


def test_import_seedguard_cli_without_engine_imports_no_app(project: Path) -> None:
    """Without --engine nothing of the app is imported (a plain --url run stays as it was)."""
    code = ("import sys; from seedguard.cli import main\n"
            "try:\n    main(['--url', 'sqlite:///x.db', '--seeds', 'app.seeds', 'history'])\n"
            "except SystemExit:\n    pass\n"
            "print('app.core.db' in sys.modules)")
    env = {**child_env(), "DATABASE_URL": "sqlite:///x.db"}
    done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False", (done.stdout, done.stderr)
    assert os.path.exists(project / "x.db") is False
