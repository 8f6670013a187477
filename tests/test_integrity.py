"""Nothing is recorded that did not happen, nothing runs twice, no unit is skipped on a
misread error: adversarial units and ledgers on every database."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import (
    TestDatabase,
    apply_module,
    apply_module_own_lock,
    child_env,
    effect,
    run_processes,
    unit,
    write_module,
)
from conftest import make_database
from sqlalchemy import orm

import seedguard
from seedguard import DefinitionError, SeedFailed, SeedguardError, UnitBlocked


@pytest.fixture
def fx(db: TestDatabase) -> TestDatabase:
    db.create_effects_table()
    return db


def _write(session: orm.Session, value: str) -> None:
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('escaper', :v)"),
                    {"v": value})


ESCAPES: dict[str, Callable[[orm.Session], Any]] = {
    "COMMIT statement": lambda s: s.execute(sa.text("COMMIT")),
    "ROLLBACK statement": lambda s: s.execute(sa.text("  /* hi */ rollback")),
    "BEGIN statement": lambda s: s.execute(sa.text("BEGIN")),
    "Connection.commit()": lambda s: s.connection().commit(),
    "Connection.rollback()": lambda s: s.connection().rollback(),
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_ending_the_transaction_early_fails_before_it_happens(fx: TestDatabase,
                                                              escape: str) -> None:
    def escaper(session: orm.Session) -> None:
        _write(session, "before")
        ESCAPES[escape](session)
        _write(session, "after")

    # One pooled engine for both runs: the failed run must leave its
    # connections (the database lock's included) clean in the pool.
    engine = fx.engine()
    with pytest.raises(SeedFailed, match="transactional=False") as info:
        seedguard.apply(engine, seeds=[unit("escaper", fn=escaper)])
    assert "rolled back" in str(info.value)
    assert fx.effects() == []
    assert fx.ledger() == []
    # The re-run runs the unit (nothing was recorded).
    result = seedguard.apply(engine, seeds=[unit("escaper", fn=lambda s: _write(s, "fixed"))],
                             lock_timeout=10)
    assert [u.name for u in result.applied] == ["escaper"]
    assert fx.effects("escaper") == ["fixed"]


MYSQL_IMPLICIT_COMMITS = [
    "CREATE TABLE IF NOT EXISTS widgets (id INT PRIMARY KEY)",
    "TRUNCATE TABLE effects",
    "ALTER TABLE effects ADD COLUMN extra INT",
    "LOCK TABLES effects WRITE",
    "SET autocommit = 1",
    "DROP TABLE IF EXISTS widgets",
]


@pytest.fixture
def mariadb_fx(tmp_path: Path) -> Iterator[TestDatabase]:
    """MariaDB only: implicit commits are MySQL/MariaDB's."""
    for database in make_database("mariadb", tmp_path):
        database.create_effects_table()
        yield database


@pytest.mark.parametrize("statement", MYSQL_IMPLICIT_COMMITS)
def test_mariadb_implicit_commit_is_refused_before_it_runs(mariadb_fx: TestDatabase,
                                                           statement: str) -> None:
    fx = mariadb_fx

    def ddl(session: orm.Session) -> None:
        _write(session, "before")
        session.execute(sa.text(statement))
        _write(session, "after")

    with pytest.raises(SeedFailed, match=r"commit implicitly.*alembic"):
        seedguard.apply(fx.url, seeds=[unit("escaper", fn=ddl)])
    assert fx.effects() == []
    assert fx.ledger() == []
    assert "widgets" not in fx.tables()


def test_temporary_table_is_allowed_in_a_transactional_unit(fx: TestDatabase) -> None:
    def staging(session: orm.Session) -> None:
        session.execute(sa.text("CREATE TEMPORARY TABLE staging (v VARCHAR(20))"))
        session.execute(sa.text("INSERT INTO staging (v) VALUES ('x')"))
        session.execute(sa.text("INSERT INTO effects (unit, value) SELECT 'staging', v "
                                "FROM staging"))

    seedguard.apply(fx.url, seeds=[unit("staging", fn=staging)])
    assert fx.effects("staging") == ["x"]


def test_transactional_ddl_rolls_back_with_the_unit(fx: TestDatabase) -> None:
    if fx.kind == "mariadb":
        pytest.skip("MariaDB commits DDL implicitly (refused, tested above)")

    def ddl_then_fail(session: orm.Session) -> None:
        session.execute(sa.text("CREATE TABLE widgets (id INTEGER PRIMARY KEY)"))
        session.execute(sa.text("INSERT INTO widgets (id) VALUES (1)"))
        raise RuntimeError("boom")

    with pytest.raises(SeedFailed, match="rolled back"):
        seedguard.apply(fx.url, seeds=[unit("widgets", fn=ddl_then_fail)])
    assert "widgets" not in fx.tables()
    assert fx.ledger() == []


@pytest.mark.parametrize("how", ["create_engine", "execution_options"])
def test_autocommit_engine_still_gets_one_transaction_per_unit(fx: TestDatabase,
                                                               how: str) -> None:
    if how == "create_engine":
        engine = fx.engine(isolation_level="AUTOCOMMIT")
    else:
        engine = fx.engine().execution_options(isolation_level="AUTOCOMMIT")

    def half_done(session: orm.Session) -> None:
        _write(session, "first half")
        raise RuntimeError("boom")

    with pytest.raises(SeedFailed, match="rolled back"):
        seedguard.apply(engine, seeds=[unit("escaper", fn=half_done)])
    assert fx.effects() == []
    assert fx.ledger() == []
    seedguard.apply(engine, seeds=[unit("escaper", fn=lambda s: _write(s, "whole"))])
    seedguard.apply(engine, seeds=[unit("escaper", fn=lambda s: _write(s, "whole"))])
    assert fx.effects("escaper") == ["whole"]
    with engine.connect() as conn:  # the engine's own connections are as they were
        conn.execute(sa.text("INSERT INTO effects (unit) VALUES ('autocommitted')"))
    assert fx.effects("autocommitted") == [None]


def _refuse_roles_in_ledger(db: TestDatabase) -> None:
    if db.kind == "sqlite":
        db.execute("CREATE TRIGGER no_roles BEFORE INSERT ON seedguard_ledger "
                   "WHEN NEW.name = 'roles' BEGIN SELECT RAISE(ABORT, 'roles refused'); END")
    else:
        db.execute("ALTER TABLE seedguard_ledger ADD CONSTRAINT no_roles "
                   "CHECK (name <> 'roles')")


def test_ledger_insert_error_is_not_taken_for_a_lost_race(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("first")])  # the ledger exists now
    _refuse_roles_in_ledger(fx)
    units = [unit("first"), unit("roles"), unit("users", after=["roles"])]

    with pytest.raises(SeedFailed, match="roles"):
        seedguard.apply(fx.url, seeds=units)
    assert fx.effects() == ["first"]  # neither roles nor users ran
    assert fx.ledger() == [("first", 1)]


def test_names_differing_only_in_case_are_refused() -> None:
    with pytest.raises(DefinitionError, match="only in case"):
        seedguard.Registry([unit("Roles"), unit("roles")])
    with pytest.raises(DefinitionError, match="only in case"):
        seedguard.apply("sqlite://", seeds=[unit("Roles"), unit("roles")])


def test_ledger_names_compare_byte_for_byte(fx: TestDatabase) -> None:
    # A unit once named "Roles" and renamed "roles": on MySQL/MariaDB's default
    # collation the new name would collide with the old row and be skipped.
    seedguard.apply(fx.url, seeds=[unit("Roles")])
    result = seedguard.apply(fx.url, seeds=[unit("roles"), unit("users", after=["roles"])])
    assert [u.name for u in result.applied] == ["roles", "users"]
    assert fx.effects() == ["Roles", "roles", "users"]


def test_durable_running_row_of_a_transactional_unit_is_never_skipped(fx: TestDatabase) -> None:
    def raw_commit(session: orm.Session) -> None:
        _write(session, "half")
        # Beneath SQLAlchemy: nothing can refuse this one.
        session.connection().connection.dbapi_connection.commit()  # type: ignore[union-attr]
        raise RuntimeError("boom")

    with pytest.raises(SeedFailed):
        seedguard.apply(fx.url, seeds=[unit("escaper", fn=raw_commit)])
    with pytest.raises(UnitBlocked, match="seedguard resolve escaper"):
        seedguard.apply(fx.url, seeds=[unit("escaper", fn=raw_commit)])


def test_apply_inside_a_unit_raises_at_once(fx: TestDatabase) -> None:
    def nested(session: orm.Session) -> None:
        # Without the re-entrancy check this waits for the file lock its own
        # process holds (bounded here so an old seedguard fails, not hangs).
        seedguard.apply(fx.url, seeds=[unit("inner")], lock_timeout=3)

    with pytest.raises(SeedFailed, match="not re-entrant") as info:
        seedguard.apply(fx.url, seeds=[unit("outer", fn=nested)])
    assert isinstance(info.value.__cause__, SeedguardError)
    assert fx.ledger() == []


@pytest.mark.parametrize("raised", [SystemExit(0), GeneratorExit()])
def test_exit_inside_a_unit_fails_it(fx: TestDatabase, raised: BaseException) -> None:
    def exits(session: orm.Session) -> None:
        _write(session, "before exit")
        raise raised

    with pytest.raises(SeedFailed, match="rolled back"):
        seedguard.apply(fx.url, seeds=[unit("exits", fn=exits), unit("after", after=["exits"])])
    assert fx.effects() == []
    assert fx.ledger() == []


def test_keyboard_interrupt_rolls_back_and_propagates(fx: TestDatabase) -> None:
    def interrupted(session: orm.Session) -> None:
        _write(session, "before ctrl-c")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seedguard.apply(fx.url, seeds=[unit("interrupted", fn=interrupted)])
    assert fx.effects() == []
    assert fx.ledger() == []


def test_old_data_after_new_data_reverts_nothing(fx: TestDatabase) -> None:
    fx.execute("CREATE TABLE colors (name VARCHAR(20) PRIMARY KEY)")
    old = [{"name": "red"}, {"name": "green"}]
    new = [*old, {"name": "blue"}]

    def colors(rows: list[dict[str, str]]) -> seedguard.SeedUnit:
        return seedguard.data_seed("colors", table="colors", key="name", rows=rows, prune=True)

    seedguard.apply(fx.url, seeds=[colors(old)])
    seedguard.apply(fx.url, seeds=[colors(new)])
    # A replica still running the old code restarts:
    result = seedguard.apply(fx.url, seeds=[colors(old)])
    assert result.applied == []
    assert [u.name for u in result.ahead] == ["colors"]
    assert sorted(r[0] for r in fx.execute("SELECT name FROM colors")) == ["blue", "green", "red"]
    # The new code again: nothing to do.
    assert seedguard.apply(fx.url, seeds=[colors(new)]).applied == []


def test_code_unit_replaced_by_a_data_seed_is_applied(fx: TestDatabase) -> None:
    fx.execute("CREATE TABLE colors (name VARCHAR(20) PRIMARY KEY)")
    seedguard.apply(fx.url, seeds=[unit("colors", fn=effect("colors"))])
    data = seedguard.data_seed("colors", table="colors", key="name", rows=[{"name": "red"}])
    result = seedguard.apply(fx.url, seeds=[data])
    assert [u.name for u in result.applied] == ["colors"]
    assert [r[0] for r in fx.execute("SELECT name FROM colors")] == ["red"]


RERUN_SEEDS = '''
import time
import sqlalchemy as sa
import seedguard


@seedguard.seed("prices", on_change="rerun")
def prices(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('prices', {value!r})"))
    time.sleep({sleep})
'''


def test_rerun_unit_runs_once_when_the_file_lock_is_split(fx: TestDatabase,
                                                          tmp_path: Path) -> None:
    # Each process has a lock file of its own (a deleted lock file, another
    # spelling of the path, another host): only the database serialises them.
    write_module(tmp_path, "rerun_seeds", RERUN_SEEDS.format(value="v1", sleep=0))
    assert run_processes(1, apply_module, fx.url, "rerun_seeds", paths=[tmp_path]) \
        == [("ok", ["prices"])]
    write_module(tmp_path, "rerun_seeds", RERUN_SEEDS.format(value="v2", sleep=1.5))
    outcomes = run_processes(3, apply_module_own_lock, fx.url, "rerun_seeds",
                             str(tmp_path), paths=[tmp_path])
    assert all(status == "ok" for status, _ in outcomes), outcomes
    assert sorted(applied for _, applied in outcomes) == [[], [], ["prices"]]
    assert fx.effects("prices") == ["v1", "v2"]


NON_TRANSACTIONAL_SEEDS = '''
import os
import time
import sqlalchemy as sa
import seedguard


@seedguard.seed("bulk", transactional=False)
def bulk(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('bulk', 'x')"))
    session.commit()
    deadline = time.monotonic() + 60
    while not os.path.exists({release!r}) and time.monotonic() < deadline:
        time.sleep(0.05)
'''


def test_late_starters_wait_for_a_running_non_transactional_unit(fx: TestDatabase,
                                                                 tmp_path: Path) -> None:
    # gunicorn workers booting a moment apart on a fresh database: the later
    # ones see the first one's "running" row and must wait, not crash.
    release = tmp_path / "release"
    write_module(tmp_path, "nontx_seeds", NON_TRANSACTIONAL_SEEDS.format(release=str(release)))
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import seedguard
            seedguard.apply({fx.url!r}, seeds="nontx_seeds")
        """)],
        env=child_env(tmp_path), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "seedguard_ledger" in fx.tables() and fx.execute(
                    "SELECT 1 FROM seedguard_ledger WHERE status = 'running'"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first applier never started its unit")
        # The owner of the "running" row is alive: an applier arriving now waits.
        here: list[Any] = []
        sys.path.insert(0, str(tmp_path))
        try:
            waiter = threading.Thread(
                target=lambda: here.append(seedguard.apply(fx.url, seeds="nontx_seeds")))
            waiter.start()
            threading.Timer(3, release.touch).start()
            outcomes = run_processes(3, apply_module, fx.url, "nontx_seeds", paths=[tmp_path])
            waiter.join(timeout=60)
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("nontx_seeds", None)
            release.touch()
        assert [r.applied for r in here] == [[]]
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    assert outcomes == [("ok", []), ("ok", []), ("ok", [])]
    assert fx.effects("bulk") == ["x"]
