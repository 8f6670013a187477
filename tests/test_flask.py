"""The Flask extension in-process, on each database: registration, the app's engine and
config inside an app context, and the `flask seedguard` command group."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import TestDatabase, child_env, write_module
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import seedguard
from seedguard import ConfigError
from seedguard.flask import SeedGuard

SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', '{tag}')"))
'''


@pytest.fixture
def seeds_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def seeds_module(folder: Path, tag: str = "x") -> str:
    name = f"flask_seeds_{uuid.uuid4().hex[:10]}"  # unique: sys.modules outlives a test
    write_module(folder, name, SEEDS.format(tag=tag))
    return name


@pytest.fixture
def make_app(db: TestDatabase) -> Iterator[object]:
    apps: list[tuple[Flask, SQLAlchemy]] = []

    def make(**config: object) -> tuple[Flask, SQLAlchemy]:
        app = Flask(f"app_{len(apps)}")
        app.config["SQLALCHEMY_DATABASE_URI"] = db.url
        app.config.update(config)
        fsa = SQLAlchemy(app)
        apps.append((app, fsa))
        return app, fsa

    db.create_effects_table()
    yield make
    for app, fsa in apps:  # let the fixture drop the database
        with app.app_context():
            fsa.engine.dispose()


def test_registers_once_per_app(tmp_path: Path) -> None:
    app = Flask("one")
    guard = SeedGuard(app, seeds="myapp.seeds")
    assert app.extensions["seedguard"] is guard
    assert "seedguard" in app.cli.commands
    with pytest.raises(ConfigError, match="already registered on the Flask app 'one'; create "
                       "one SeedGuard per app"):
        SeedGuard(app)
    with pytest.raises(ConfigError, match="already registered"):
        guard.init_app(app)

    # The app-factory pattern: one extension object, any number of apps.
    factory_guard = SeedGuard()
    first, second = Flask("a"), Flask("b")
    factory_guard.init_app(first)
    factory_guard.init_app(second)
    assert first.extensions["seedguard"] is second.extensions["seedguard"] is factory_guard


def test_apply_in_app_context_uses_the_apps_engine_and_seeds(
        make_app: object, seeds_dir: Path, db: TestDatabase) -> None:
    app, fsa = make_app()  # type: ignore[operator]
    SeedGuard(app, fsa, seeds=seeds_module(seeds_dir))
    with app.app_context():
        result = seedguard.apply()
        assert [u.name for u in result.applied] == ["roles"]
        assert seedguard.apply().applied == []
    assert db.effects() == ["roles"]
    assert db.ledger() == [("roles", 1)]
    with pytest.raises(ConfigError, match="no database configured"):
        seedguard.apply()  # no app context, no URL anywhere


def test_app_config_seeds_win_over_the_extension_argument(
        make_app: object, seeds_dir: Path, db: TestDatabase) -> None:
    configured = seeds_module(seeds_dir, tag="config")
    app, fsa = make_app(SEEDGUARD_SEEDS=configured)  # type: ignore[operator]
    guard = SeedGuard(app, fsa, seeds=seeds_module(seeds_dir, tag="argument"))
    with app.app_context():
        assert [u.name for u in guard.apply().applied] == ["roles"]
    assert db.effects("roles") == ["config"]


def test_the_apps_database_wins_over_seedguard_url_and_pyproject(
        make_app: object, seeds_dir: Path, db: TestDatabase, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer with SEEDGUARD_URL exported for the CLI, and a [tool.seedguard] url
    # in the project: inside the app's context, the app's own database is the one seeded.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("SEEDGUARD_URL", f"sqlite:///{elsewhere / 'from-env.db'}")
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.seedguard]\nurl = "sqlite:///{elsewhere / "from-pyproject.db"}"\n')
    app, fsa = make_app()  # type: ignore[operator]
    SeedGuard(app, fsa, seeds=seeds_module(seeds_dir))
    with app.app_context():
        assert [u.name for u in seedguard.apply().applied] == ["roles"]
    assert db.ledger() == [("roles", 1)]
    assert db.effects() == ["roles"]
    status = app.test_cli_runner().invoke(args=["seedguard", "status", "--json"])
    assert status.exit_code == 0, status.output
    assert [(u["name"], u["state"]) for u in json.loads(status.stdout)["units"]] == [
        ("roles", "applied")]
    assert list(elsewhere.iterdir()) == []  # neither other database was ever opened


def test_extension_apply_needs_its_app(make_app: object, seeds_dir: Path) -> None:
    app, fsa = make_app()  # type: ignore[operator]
    guard = SeedGuard(app, fsa, seeds=seeds_module(seeds_dir))
    with pytest.raises(ConfigError, match="needs an app context"):
        guard.apply()
    other = Flask("other")
    with other.app_context(), pytest.raises(ConfigError, match="not the one registered"):
        guard.apply()


def test_flask_seedguard_commands(make_app: object, seeds_dir: Path, db: TestDatabase) -> None:
    app, fsa = make_app()  # type: ignore[operator]
    SeedGuard(app, fsa, seeds=seeds_module(seeds_dir))
    runner = app.test_cli_runner()

    check = runner.invoke(args=["seedguard", "check"])
    assert check.exit_code == 3 and "pending: roles v1" in check.output
    upgrade = runner.invoke(args=["seedguard", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    assert upgrade.output.startswith("applying roles v1 ... done ")
    status = runner.invoke(args=["seedguard", "status", "--json"])
    assert status.exit_code == 0
    doc = json.loads(status.stdout)
    assert [(u["name"], u["state"]) for u in doc["units"]] == [("roles", "applied")]
    assert runner.invoke(args=["seedguard", "check"]).exit_code == 0
    assert db.effects() == ["roles"]

    missing = runner.invoke(args=["seedguard", "--seeds", "no_such_module_here", "upgrade"])
    assert missing.exit_code == 2 and "not found" in missing.output


SINGLE_FILE = '''
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = {url!r}
db = SQLAlchemy(app)
SeedGuard(app, db, seeds="flaskapp_seeds")
'''

FACTORY = '''
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

db = SQLAlchemy()
guard = SeedGuard(seeds="flaskapp_seeds")

def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = {url!r}
    db.init_app(app)
    guard.init_app(app)
    return app
'''


@pytest.mark.parametrize("layout", ["single-file", "factory"])
def test_flask_seedguard_in_a_real_process(db: TestDatabase, tmp_path: Path,
                                           layout: str) -> None:
    db.create_effects_table()
    source = SINGLE_FILE if layout == "single-file" else FACTORY
    write_module(tmp_path, "flaskapp", source.format(url=db.url))
    write_module(tmp_path, "flaskapp_seeds", SEEDS.format(tag="cli"))
    command = [sys.executable, "-m", "flask", "--app", "flaskapp", "seedguard"]

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], cwd=tmp_path, env=child_env(tmp_path),
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    assert flask("check").returncode == 3
    upgraded = flask("upgrade", "--json")
    assert upgraded.returncode == 0, upgraded.stderr
    assert [u["name"] for u in json.loads(upgraded.stdout)["applied"]] == ["roles"]
    assert flask("check").returncode == 0
    assert db.effects("roles") == ["cli"]


def test_import_seedguard_stays_light(tmp_path: Path) -> None:
    probe = ("import sys, seedguard; "
             "print(sorted(m for m in ('flask', 'click', 'alembic', 'flask_sqlalchemy') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- seeding at start-up: SeedGuard(apply_on_start=...) -------------------------------


def test_apply_on_start_applies_when_the_app_is_created(
        make_app: object, seeds_dir: Path, db: TestDatabase) -> None:
    # Outside the `flask` command (here: pytest, like gunicorn importing the app),
    # creating the app applies; SEEDGUARD_APPLY_ON_START in its config wins over the
    # constructor, init_app(apply_on_start=) over both.
    seeds = seeds_module(seeds_dir)
    factory = SeedGuard(seeds=seeds, apply_on_start=True)
    off, _ = make_app(SEEDGUARD_APPLY_ON_START=False)  # type: ignore[operator]
    factory.init_app(off)
    assert db.ledger() == []
    on, _ = make_app(SEEDGUARD_APPLY_ON_START="false")  # type: ignore[operator]
    factory.init_app(on, apply_on_start={"contexts": ["dev"]})
    assert db.ledger() == [("roles", 1)]
    app, fsa = make_app()  # type: ignore[operator]
    SeedGuard(app, fsa, seeds=seeds, apply_on_start=True)
    assert db.ledger() == [("roles", 1)]
    assert db.effects() == ["roles"]  # once, though three apps started


def test_apply_on_start_refuses_what_it_cannot_do(make_app: object, seeds_dir: Path,
                                                  db: TestDatabase) -> None:
    with pytest.raises(ConfigError, match=r"unknown apply\(\) argument\(s\) shema; known: "
                       r"seeds, contexts"):
        SeedGuard(apply_on_start={"shema": True})
    app, fsa = make_app(SEEDGUARD_APPLY_ON_START="sometimes")  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"app.config\['SEEDGUARD_APPLY_ON_START'\] must be "
                       r"True, False, or a dict of apply\(\) arguments"):
        SeedGuard(app, fsa)
    # Created before any unit is declared (the top of a single-file app): say so
    # instead of seeding nothing.
    early, early_fsa = make_app()  # type: ignore[operator]
    with pytest.raises(ConfigError, match="found no seed units: give it seeds="):
        SeedGuard(early, early_fsa, apply_on_start=True)
    assert db.ledger() == []


START_APP = '''
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = {url!r}
db = SQLAlchemy(app)
Migrate(app, db)
# At start-up: the app's `alembic upgrade head`, then the seeds.
SeedGuard(app, db, seeds="start_seeds", apply_on_start={{"schema": True}})
'''

START_SEEDS = '''
import os
import sqlalchemy as sa
import seedguard

VERSION = int(os.environ.get("ROLES_VERSION", "1"))

@seedguard.seed("roles", version=VERSION)
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', :v)"),
                    {"v": str(VERSION)})
'''

START_REVISION = '''
"""{name}

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table({name!r}, sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table({name!r})
'''


def test_apply_on_start_seeds_a_server_start_and_leaves_flask_commands_alone(
        pg: TestDatabase) -> None:
    # What is under test is which `flask` command applies, not the database: one
    # database keeps these processes few (the reloader tests start up on all three).
    db = pg
    db.create_effects_table()
    cwd = db.tmp_path
    write_module(cwd, "flaskapp", START_APP.format(url=db.url))
    write_module(cwd, "start_seeds", START_SEEDS)

    def start(*args: str, version: int = 1) -> subprocess.Popen[str]:
        env = child_env(cwd)
        env["ROLES_VERSION"] = str(version)
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)

    def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def flask(*args: str, version: int = 1) -> subprocess.Popen[str]:
        return start("-m", "flask", "--app", "flaskapp", *args, version=version)

    def revision() -> str | None:
        rows = db.execute("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None

    migrations_folder(cwd / "migrations", db.url)
    versions = cwd / "migrations" / "versions"
    for name, rev, down in (("widgets", "a1", None), ("gadgets", "a2", "a1")):
        (versions / f"{rev}_{name}.py").write_text(
            textwrap.dedent(START_REVISION.format(name=name, rev=rev, down=down)))

    # The app created for a server (what gunicorn and uWSGI do: import it) migrates and seeds.
    started = finish(start("-c", "import flaskapp"))
    assert started.returncode == 0, started.stderr
    assert revision() == "a2"
    assert db.ledger() == [("roles", 1)]

    # `flask db downgrade` goes below head, and stays there: no later command
    # re-upgrades the schema first.
    down = finish(flask("db", "downgrade"))
    assert down.returncode == 0, down.stderr
    assert revision() == "a1"

    # A version bump: no flask command but `run` applies it. These only read, so they
    # run side by side; the ledger afterwards shows that none of them applied anything.
    procs = [flask("routes", version=2),
             flask("seedguard", "status", "--json", version=2),
             flask("seedguard", "upgrade", "--dry-run", version=2),
             flask("seedguard", "check", version=2)]
    try:
        routes, status, dry, check = (finish(proc) for proc in procs)
    finally:
        for proc in procs:  # reap the others when one of them timed out
            proc.kill()
            proc.wait(timeout=10)
    assert routes.returncode == 0, routes.stderr
    assert status.returncode == 0, status.stderr
    assert [(u["name"], u["state"], u["version"]) for u in json.loads(status.stdout)["units"]
            ] == [("roles", "pending", 2)]
    assert dry.returncode == 0, dry.stderr
    assert "would apply 1 unit(s)" in dry.stdout and "roles v2" in dry.stdout, dry.stdout
    assert check.returncode == 3, check.stdout + check.stderr
    assert "pending: roles v2" in check.stdout
    assert db.ledger() == [("roles", 1)]
    assert db.effects("roles") == ["1"]
    assert revision() == "a1"


def migrations_folder(directory: Path, url: str) -> None:
    """What `flask db init` writes, made in-process by Flask-Migrate's own init()."""
    from flask_migrate import Migrate, init

    app = Flask("migrations")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    fsa = SQLAlchemy(app)
    Migrate(app, fsa, directory=str(directory))
    with app.app_context():
        init()
        fsa.engine.dispose()
