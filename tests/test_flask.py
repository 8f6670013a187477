"""The Flask extension in-process, on each database: registration, the app's engine and
config inside an app context, and the `flask seedguard` command group."""

from __future__ import annotations

import json
import subprocess
import sys
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
