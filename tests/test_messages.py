"""What the library tells a new user, and that it holds before setup is done: reprs that
name units, driver hints that name the fix, contexts that refuse a left-out dependency,
configuration relative to the pyproject, and a dry run before the tables exist.

The CLI's side of the same contract is in ``test_cli_messages.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import seedguard
from seedguard import config
from seedguard.connect import create, driver_hint


class _Base(DeclarativeBase):
    pass


class Country(_Base):
    __tablename__ = "countries"
    code: Mapped[str] = mapped_column(sa.String(2), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


# -- short reprs -----------------------------------------------------------------------


def test_reprs_name_units_by_name_and_version(db: TestDatabase) -> None:
    db.create_effects_table()
    units = [unit("roles"), unit("users", after=["roles"]), unit("posts", after=["users"])]
    result = seedguard.apply(db.url, seeds=units)
    text = repr(result)
    assert text == "ApplyResult(applied=['roles v1', 'users v1', 'posts v1'])"
    assert repr(units[0]) == "SeedUnit('roles', version=1)"
    assert repr(result.applied[0]).startswith("Applied('roles', version=1, duration_ms=")
    again = seedguard.apply(db.url, seeds=units)
    assert repr(again) == "ApplyResult(skipped=['roles v1', 'users v1', 'posts v1'])"
    assert "function" not in str(result) + str(again)


# -- driver hints ---------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "hint"), [
    ("mysql://u@h/d", "use mysql+pymysql:// (installed by `pip install 'seedguard[mysql]'`) "
                      "or pip install mysqlclient"),
    ("mariadb://u@h/d", "use mariadb+pymysql:// (installed by `pip install 'seedguard[mysql]'`) "
                        "or pip install mysqlclient"),
    ("mysql+pymysql://u@h/d", "pip install 'seedguard[mysql]'"),
    ("postgresql+psycopg2://u@h/d", "or pip install psycopg2-binary"),
    ("postgresql+psycopg://u@h/d", "pip install 'seedguard[postgresql]'"),
    ("postgresql+pg8000://u@h/d", "use postgresql+psycopg:// (installed by `pip install "
                                  "'seedguard[postgresql]'`) or pip install pg8000"),
])
def test_driver_hint_names_what_fixes_it(url: str, hint: str) -> None:
    assert driver_hint(sa.engine.make_url(url)).endswith(hint)


def test_missing_driver_message_from_a_clean_interpreter(tmp_path: Path) -> None:
    # A real missing driver: a child that cannot import MySQLdb (mysqlclient is
    # not installed here) gets the hint that fixes it, not "install seedguard[mysql]".
    code = ("import seedguard\n"
            "try:\n"
            "    seedguard.apply('mysql://root@127.0.0.1/x', seeds=[])\n"
            "except seedguard.ConfigError as err:\n"
            "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "use mysql+pymysql://" in done.stdout
    assert "pip install mysqlclient" in done.stdout


def test_postgres_scheme_suggests_postgresql() -> None:
    with pytest.raises(seedguard.ConfigError, match=r"did you mean postgresql://\?"):
        create("postgres://app@localhost/app")
    with pytest.raises(seedguard.ConfigError, match=r"did you mean postgresql\+psycopg://\?"):
        create("postgres+psycopg://app@localhost/app")


# -- contexts -----------------------------------------------------------------------------


def test_dependency_left_out_by_contexts_is_a_definition_error(db: TestDatabase) -> None:
    db.create_effects_table()
    units = [unit("roles", contexts=frozenset({"prod"})),
             unit("admin-user", after=["roles"])]
    with pytest.raises(seedguard.DefinitionError) as caught:
        seedguard.apply(db.url, seeds=units, contexts=["dev"])
    message = str(caught.value)
    assert "'admin-user' depends on 'roles'" in message
    assert "prod" in message and "dev" in message
    assert db.effects() == [] and db.ledger() == []
    # Active, the dependency runs first.
    result = seedguard.apply(db.url, seeds=units, contexts=["prod"])
    assert [a.name for a in result.applied] == ["roles", "admin-user"]


def test_target_outside_the_active_contexts_runs_nothing(db: TestDatabase) -> None:
    db.create_effects_table()
    units = [unit("roles"), unit("admin-user", after=["roles"], contexts=frozenset({"dev"}))]
    with pytest.raises(seedguard.ConfigError, match=r"runs only in context\(s\) dev.*--context "
                       r"dev.*nothing ran"):
        seedguard.apply(db.url, seeds=units, target="admin-user")
    assert db.effects() == []
    result = seedguard.apply(db.url, seeds=units, target="admin-user", contexts=["dev"])
    assert [a.name for a in result.applied] == ["roles", "admin-user"]


# -- configuration ----------------------------------------------------------------------------


def test_relative_sqlite_url_in_pyproject_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.seedguard]\nurl = "sqlite:///data/app.db?timeout=5"\n')
    deeper = tmp_path / "src" / "pkg"
    deeper.mkdir(parents=True)
    settings = config.resolve(cwd=deeper)
    assert settings.url == f"sqlite:///{(tmp_path / 'data' / 'app.db').resolve()}?timeout=5"
    # Absolute paths, memory databases and server URLs are left as written.
    for url in ("sqlite:////abs/app.db", "sqlite://", "sqlite:///:memory:",
                "postgresql+psycopg://app@db/app"):
        (tmp_path / "pyproject.toml").write_text(f'[tool.seedguard]\nurl = "{url}"\n')
        assert config.resolve(cwd=deeper).url == url


def test_relative_sqlite_url_on_the_command_line_stays_relative(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\nurl = "sqlite:///app.db"\n')
    assert config.resolve("sqlite:///here.db", cwd=tmp_path).url == "sqlite:///here.db"
    env = dict(os.environ, SEEDGUARD_URL="sqlite:///env.db")
    code = "from seedguard import config; print(config.resolve().url)"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "sqlite:///env.db", done.stderr


# -- dry run before the tables exist ----------------------------------------------------------


def test_dry_run_counts_inserts_into_a_table_an_earlier_unit_creates(db: TestDatabase) -> None:
    registry = seedguard.Registry()

    def schema(session: sa.orm.Session) -> None:
        _Base.metadata.create_all(session.connection())

    registry.add(unit("schema", fn=schema))
    seed = seedguard.data_seed("countries", table=Country, key="code", after=["schema"],
                               rows=[{"code": "fr", "name": "France"},
                                     {"code": "de", "name": "Germany"}])
    registry.add(seed)
    result = seedguard.apply(db.url, seeds=registry, dry_run=True)
    assert [u.name for u in result.pending] == ["schema", "countries"]
    preview = result.previews["countries"]
    assert (preview.inserted, preview.updated, preview.table_missing) == (2, 0, True)
    assert "countries" not in db.tables()
    if db.kind != "mariadb":  # MariaDB commits DDL: create_all belongs outside a unit there
        applied = seedguard.apply(db.url, seeds=registry)
        assert [a.name for a in applied.applied] == ["schema", "countries"]
        again = seedguard.apply(db.url, seeds=registry, dry_run=True)
        assert again.pending == []
    else:
        _Base.metadata.create_all(db.engine())
        preview = seedguard.apply(db.url, seeds=registry, dry_run=True).previews["countries"]
        assert (preview.inserted, preview.table_missing) == (2, False)


@pytest.mark.parametrize("table", ["countries", "model"])
def test_dry_run_with_prune_before_the_table_exists(db: TestDatabase, table: str) -> None:
    # Named or as a model, a table that does not exist yet is neither queried
    # nor pruned in a dry run: every row counts as an insert.
    seed = seedguard.data_seed("countries", table=Country if table == "model" else table,
                               key="code", prune=True,
                               rows=[{"code": "fr", "name": "France"}])
    preview = seedguard.apply(db.url, seeds=[seed], dry_run=True).previews["countries"]
    assert (preview.inserted, preview.deleted, preview.table_missing) == (1, 0, True)
