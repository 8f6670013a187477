"""Finding the database and the seeds, and every way that can go wrong, with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit

import seedguard
from seedguard import ConfigError
from seedguard.config import resolve

SECRET = "s3cr3t-pw"


def test_no_database_says_how_to_give_one(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        seedguard.apply(seeds=[unit("a")])
    message = str(info.value)
    assert "no database configured" in message
    for hint in ("SEEDGUARD_URL", "--url", "[tool.seedguard]", "Flask"):
        assert hint in message


def test_unparseable_url_hides_the_password() -> None:
    with pytest.raises(ConfigError, match="cannot parse database URL") as info:
        seedguard.apply(f"not a url:{SECRET}@host", seeds=[unit("a")])
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        seedguard.apply(f"postgresql://user:{SECRET}@host:notaport/db", seeds=[unit("a")])
    assert SECRET not in str(info.value)


def test_unknown_dialect() -> None:
    with pytest.raises(ConfigError, match="unknown database dialect or driver") as info:
        seedguard.apply(f"nosuchdb://u:{SECRET}@h/d", seeds=[unit("a")])
    assert SECRET not in str(info.value)


def test_missing_driver_names_the_extra_to_install() -> None:
    # mysqlclient (MySQLdb) is not a dependency of seedguard or its tests.
    with pytest.raises(ConfigError, match=r"driver .* is not installed") as info:
        seedguard.apply(f"mysql+mysqldb://u:{SECRET}@127.0.0.1/d", seeds=[unit("a")])
    assert "seedguard[mysql]" in str(info.value)
    assert SECRET not in str(info.value)


def test_unreachable_server_hides_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Port 1 on loopback: nothing listens there, so the refusal is immediate.
    with pytest.raises(ConfigError, match="cannot connect to") as info:
        seedguard.apply(f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/app", seeds=[unit("a")])
    assert "is the server running" in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_unreachable_mysql_server() -> None:
    with pytest.raises(ConfigError, match="cannot connect to") as info:
        seedguard.apply(f"mysql+pymysql://app:{SECRET}@127.0.0.1:1/app", seeds=[unit("a")])
    assert SECRET not in str(info.value)


def test_missing_seeds_module_through_apply(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seeds module 'nope_not_here' not found"):
        seedguard.apply(f"sqlite:///{tmp_path / 'a.db'}", seeds="nope_not_here")
    assert not (tmp_path / "a.db").exists()


def test_unwritable_lock_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create the lock file"):
        seedguard.apply(f"sqlite:///{tmp_path / 'a.db'}", seeds=[unit("a")],
                        lock_path=blocker / "seed.lock")


def test_pyproject_configures_url_and_seeds(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.seedguard]\n'
        'url = "sqlite:///from-pyproject.db"\nseeds = "app.seeds"\n'
        'contexts = ["dev"]\nlock_timeout = 7\nlock_path = "locks/seed.lock"\n'
    )
    nested = tmp_path / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    settings = resolve()
    # Relative to the pyproject.toml, like lock_path: not to the current directory.
    assert settings.url == f"sqlite:///{tmp_path / 'from-pyproject.db'}"
    assert settings.seeds == "app.seeds"
    assert settings.contexts == ("dev",)
    assert settings.lock_timeout == 7
    assert settings.lock_path == str(tmp_path / "locks" / "seed.lock")
    assert settings.sources["url"] == str(tmp_path / "pyproject.toml")


def test_precedence_argument_then_environment_then_pyproject(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.seedguard]\nurl = "sqlite:///pyproject.db"\nseeds = "p"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEEDGUARD_URL", "sqlite:///env.db")
    assert resolve().url == "sqlite:///env.db"
    assert resolve().seeds == "p"
    assert resolve("sqlite:///arg.db").url == "sqlite:///arg.db"
    assert resolve("sqlite:///arg.db").sources["url"] == "argument"


def test_pyproject_unknown_key_is_reported(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\nulr = "sqlite://"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown key.*ulr"):
        resolve()


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_bad_lock_timeout(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDGUARD_LOCK_TIMEOUT", value)
    with pytest.raises(ConfigError, match="lock_timeout"):
        resolve("sqlite://")


@pytest.mark.parametrize("name", ["x; drop table y", "1abc", "a.b", "a" * 64])
def test_ledger_table_must_be_a_plain_identifier(name: str) -> None:
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        resolve("sqlite://", ledger_table=name)


def test_configured_ledger_table_name_is_used(db: TestDatabase) -> None:
    db.create_effects_table()
    settings_env = {"SEEDGUARD_LEDGER_TABLE": "my_seeds"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings_env.items():
            mp.setenv(key, value)
        seedguard.apply(db.url, seeds=[unit("a")])
    assert {"my_seeds", "my_seeds_version"} <= db.tables()
    assert "seedguard_ledger" not in db.tables()


def test_inside_a_flask_app_context_the_apps_database_comes_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    (tmp_path / "pyproject.toml").write_text(
        '[tool.seedguard]\nurl = "sqlite:///pyproject.db"\nseeds = "p"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEEDGUARD_URL", "sqlite:///env.db")
    app = Flask("cfg")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    fsa = SQLAlchemy(app)
    other = sa.create_engine("sqlite://")
    try:
        with app.app_context():
            # The app's engine beats SEEDGUARD_URL and [tool.seedguard] url ...
            settings = resolve()
            assert settings.engine is fsa.engine
            assert settings.url is None
            assert settings.sources["url"] == "Flask-SQLAlchemy engine"
            # ... while the keys the app does not set still come from further down.
            assert settings.seeds == "p"
            # Arguments beat the app: a URL, or an Engine (and then no URL from anywhere).
            assert resolve("sqlite:///arg.db").url == "sqlite:///arg.db"
            assert resolve("sqlite:///arg.db").engine is None
            by_engine = resolve(other)
            assert by_engine.engine is other and by_engine.url is None
            assert by_engine.sources["url"] == "argument"
            # The app's own SEEDGUARD_URL beats its engine.
            app.config["SEEDGUARD_URL"] = "sqlite:///config.db"
            configured = resolve()
            assert configured.url == "sqlite:///config.db"
            assert configured.engine is None
            assert configured.sources["url"] == "Flask app config"
        # Outside the app context the environment wins again.
        assert resolve().url == "sqlite:///env.db"
    finally:
        other.dispose()
        with app.app_context():
            fsa.engine.dispose()
