"""A unit's work and its ledger row commit together, or neither does, or seedguard says so.

Every way real code ends or bypasses a unit's transaction, on every database
it applies to. Each must end in one of three ways: fully atomic, refused
before it wrote anything, or reported truthfully (``SeedFailed.rolled_back``
False, the ledger row ``dirty``, the next run refused with ``UnitBlocked``
naming ``seedguard resolve``). A side effect never runs twice silently.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit
from conftest import make_database
from sqlalchemy import orm

import seedguard
from seedguard import DefinitionError, SeedFailed, SeedguardError, UnitBlocked, UnitEscape


@pytest.fixture
def fx(db: TestDatabase) -> TestDatabase:
    db.create_effects_table()
    return db


@pytest.fixture
def mariadb_fx(tmp_path: Path) -> Iterator[TestDatabase]:
    for database in make_database("mariadb", tmp_path):
        database.create_effects_table()
        yield database


@pytest.fixture
def pg_fx(tmp_path: Path) -> Iterator[TestDatabase]:
    for database in make_database("postgresql", tmp_path):
        database.create_effects_table()
        yield database


def _write(session: orm.Session, value: str) -> None:
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('escaper', :v)"),
                    {"v": value})


def _status(db: TestDatabase, name: str) -> list[str]:
    return [row[0] for row in db.execute("SELECT status FROM seedguard_ledger WHERE name = :n",
                                         n=name)]


def assert_truthful(db: TestDatabase, engine: sa.Engine, err: SeedFailed, name: str) -> None:
    """Atomic or refused (nothing left), or reported: dirty, and blocked until resolved."""
    if err.rolled_back:
        assert "rolled back" in str(err)
        assert db.effects() == []
        assert db.ledger() == []
        return
    message = str(err)
    assert "may already be committed" in message.lower()
    assert repr(name) in message
    assert f"seedguard resolve {name} --applied" in message
    assert _status(db, name) == ["dirty"]
    # Never recorded applied; the next run refuses it instead of running it again.
    before = db.effects()
    with pytest.raises(UnitBlocked, match=rf"seedguard resolve {name} --applied") as info:
        seedguard.apply(engine, seeds=[unit(name, fn=lambda s: _write(s, "again"))])
    assert "dirty" in str(info.value)
    assert db.effects() == before


def _fail_after(escape: Callable[[orm.Session], Any]) -> Callable[[orm.Session], None]:
    def work(session: orm.Session) -> None:
        _write(session, "before")
        escape(session)
        _write(session, "after")
        raise RuntimeError("the unit fails after ending its transaction")

    return work


def _dbapi(session: orm.Session) -> Any:
    return session.connection().connection.dbapi_connection


def _raw_commit(session: orm.Session) -> None:
    _dbapi(session).commit()


def _raw_cursor_commit(session: orm.Session) -> None:
    cursor = _dbapi(session).cursor()
    cursor.execute("COMMIT")
    cursor.close()


HIDDEN_COMMITS = {
    "after a '#' string": "INSERT INTO effects (unit, value) VALUES ('escaper', '#ff0000'); "
                          "COMMIT; INSERT INTO effects (unit, value) VALUES ('escaper', 'x')",
    "after a '--' string": "INSERT INTO effects (unit, value) VALUES ('escaper', 'a--b'); "
                           "COMMIT; INSERT INTO effects (unit, value) VALUES ('escaper', 'x')",
    "after a '/*' string": "INSERT INTO effects (unit, value) VALUES ('escaper', '/*'); "
                           "COMMIT; INSERT INTO effects (unit, value) VALUES ('escaper', 'x')",
}


@pytest.mark.parametrize("hidden", list(HIDDEN_COMMITS))
def test_commit_hidden_in_a_multi_statement_string(pg_fx: TestDatabase, hidden: str) -> None:
    # PostgreSQL: the drivers of SQLite and MariaDB refuse several statements
    # in one call (pymysql without CLIENT.MULTI_STATEMENTS).
    fx = pg_fx
    engine = fx.engine()
    statement = HIDDEN_COMMITS[hidden]
    fn = _fail_after(lambda s: s.connection().exec_driver_sql(statement))
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[unit("escaper", fn=fn)])
    assert_truthful(fx, engine, info.value, "escaper")


def test_commit_after_a_dollar_quote_on_postgresql(pg_fx: TestDatabase) -> None:
    engine = pg_fx.engine()
    statement = ("INSERT INTO effects (unit, value) VALUES ('escaper', $$it's$$); COMMIT; "
                 "INSERT INTO effects (unit, value) VALUES ('escaper', 'x')")
    fn = _fail_after(lambda s: s.connection().exec_driver_sql(statement))
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[unit("escaper", fn=fn)])
    assert_truthful(pg_fx, engine, info.value, "escaper")


@pytest.mark.parametrize("escape", [_raw_commit, _raw_cursor_commit],
                         ids=["dbapi commit()", "raw cursor COMMIT"])
def test_raw_commit_then_failure_is_reported_dirty(fx: TestDatabase,
                                                   escape: Callable[[orm.Session], None]) -> None:
    engine = fx.engine()
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[unit("escaper", fn=_fail_after(escape))])
    assert info.value.rolled_back is False
    assert fx.effects("escaper") == ["before"]  # the committed half, and only it
    assert_truthful(fx, engine, info.value, "escaper")


@pytest.mark.parametrize("outcome", ["applied", "retry"])
def test_dirty_unit_is_settled_by_resolve(fx: TestDatabase, outcome: str) -> None:
    engine = fx.engine()
    with pytest.raises(SeedFailed):
        seedguard.apply(engine, seeds=[unit("escaper", fn=_fail_after(_raw_commit))])
    seedguard.api.resolve(engine, "escaper", outcome=outcome)
    result = seedguard.apply(engine, seeds=[unit("escaper", fn=lambda s: _write(s, "retried"))])
    if outcome == "applied":
        assert result.applied == []
        assert fx.effects("escaper") == ["before"]
    else:
        assert [u.name for u in result.applied] == ["escaper"]
        assert fx.effects("escaper") == ["before", "retried"]
    assert _status(fx, "escaper") == ["applied"]


def test_unit_that_succeeds_after_a_raw_commit_is_reported_not_atomic(
        fx: TestDatabase, caplog: pytest.LogCaptureFixture) -> None:
    def work(session: orm.Session) -> None:
        # Straight on the unit's connection, so no savepoint of the session's
        # is lost with the commit (session.commit() would fail on it).
        conn = session.get_bind()
        assert isinstance(conn, sa.Connection)
        insert = "INSERT INTO effects (unit, value) VALUES ('escaper', '{}')"
        conn.exec_driver_sql(insert.format("before"))
        conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        conn.exec_driver_sql(insert.format("after"))

    with caplog.at_level(logging.WARNING, logger="seedguard"):
        result = seedguard.apply(fx.engine(), seeds=[unit("escaper", fn=work)])
    assert [u.name for u in result.applied] == ["escaper"]
    assert fx.effects("escaper") == ["before", "after"]
    assert any("escaper" in r.getMessage() and "not atomic" in r.getMessage()
               for r in caplog.records)


def test_atomic_unit_gets_no_warning(fx: TestDatabase, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seedguard"):
        seedguard.apply(fx.engine(), seeds=[unit("fine", fn=lambda s: _write(s, "x"))])
    assert not [r for r in caplog.records if "not atomic" in r.getMessage()]


MARIADB_ESCAPES = {
    "PREPARE/EXECUTE TRUNCATE": ["PREPARE s FROM 'TRUNCATE TABLE other'", "EXECUTE s"],
    "EXECUTE IMMEDIATE": ["EXECUTE IMMEDIATE 'TRUNCATE TABLE other'"],
    "SET autocommit='ON'": ["SET autocommit='ON'"],
    "SET autocommit=DEFAULT": ["SET autocommit=DEFAULT"],
    "SET autocommit=@x": ["SET @x = 1", "SET autocommit=@x"],
    "SET autocommit=(1)": ["SET autocommit=(1)"],
    "versioned comment COMMIT": ["/*!50000 COMMIT */"],
    "CALL a committing procedure": ["CALL committer()"],
}


@pytest.mark.parametrize("escape", list(MARIADB_ESCAPES))
def test_mariadb_ways_to_commit_are_reported(mariadb_fx: TestDatabase, escape: str) -> None:
    fx = mariadb_fx
    fx.execute("CREATE TABLE other (id INT)")
    fx.execute("CREATE PROCEDURE committer() BEGIN COMMIT; END")
    engine = fx.engine()

    def run(session: orm.Session) -> None:
        for statement in MARIADB_ESCAPES[escape]:
            session.connection().exec_driver_sql(statement)

    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[unit("escaper", fn=_fail_after(run))])
    assert_truthful(fx, engine, info.value, "escaper")
    # The connection is clean for the next unit: it is atomic again.
    fx.execute("DELETE FROM effects")
    with pytest.raises(SeedFailed) as clean:
        seedguard.apply(engine, seeds=[unit("next", fn=_fail_after(lambda s: None))])
    assert clean.value.rolled_back is True
    assert fx.effects() == []


def test_raw_connection_write_is_refused(fx: TestDatabase) -> None:
    engine = fx.engine()
    errors: list[BaseException] = []

    def work(session: orm.Session) -> None:
        _write(session, "inside")
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("INSERT INTO effects (unit, value) VALUES ('raw', 'x')")
            raw.commit()
        except Exception as err:  # refused by the database: the connection is read-only
            errors.append(err)
        finally:
            raw.close()
        raise RuntimeError("fails after")

    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[unit("raw", fn=work)])
    assert info.value.rolled_back is True
    assert errors, "the raw write was not refused"
    assert fx.effects() == []
    assert fx.ledger() == []
    # The pooled connection is writable again for the app afterwards.
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO effects (unit) VALUES ('app')"))
    assert fx.effects() == ["app"]


def _threads(count: int, target: Callable[[], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


@pytest.mark.parametrize("fails", [True, False], ids=["failing unit", "succeeding unit"])
def test_worker_threads_writing_through_a_scoped_session_are_refused(fx: TestDatabase,
                                                                     fails: bool) -> None:
    engine = fx.engine()
    SessionLocal = orm.scoped_session(orm.sessionmaker(engine))
    seen: list[BaseException] = []

    def worker() -> None:
        try:
            SessionLocal.execute(sa.text("INSERT INTO effects (unit) VALUES ('thread')"))
            SessionLocal.commit()
        finally:
            SessionLocal.remove()

    def work() -> None:
        SessionLocal.execute(sa.text("INSERT INTO effects (unit) VALUES ('unit')"))
        seen.extend(_threads(4, worker))
        if fails:
            raise RuntimeError("fails after")

    with pytest.raises(SeedFailed) as info:
        seedguard.apply(engine, seeds=[seedguard.SeedUnit("threads", work)],
                        scoped_sessions=[SessionLocal])
    assert len(seen) == 4 and all(isinstance(err, UnitEscape) for err in seen)
    assert "transactional=False" in str(seen[0])
    assert info.value.rolled_back is True
    assert fx.effects() == []
    assert fx.ledger() == []


def test_worker_threads_writing_through_flask_db_session_are_refused(fx: TestDatabase) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("threads")
    app.config["SQLALCHEMY_DATABASE_URI"] = fx.url
    db = SQLAlchemy(app)

    def worker() -> None:
        with app.app_context():
            db.session.execute(sa.text("INSERT INTO effects (unit) VALUES ('thread')"))
            db.session.commit()

    seen: list[BaseException] = []

    def work() -> None:
        db.session.execute(sa.text("INSERT INTO effects (unit) VALUES ('unit')"))
        seen.extend(_threads(2, worker))
        raise RuntimeError("fails after")

    try:
        with app.app_context(), pytest.raises(SeedFailed) as info:
            seedguard.apply(seeds=[seedguard.SeedUnit("flask-threads", work)])
        assert len(seen) == 2 and all(isinstance(err, UnitEscape) for err in seen)
        assert info.value.rolled_back is True
        assert fx.effects() == []
        assert fx.ledger() == []
    finally:
        with app.app_context():
            db.engine.dispose()


def test_write_through_another_engine_of_the_process_is_refused(fx: TestDatabase) -> None:
    # An app's module-level engine: not the one handed to apply().
    app_engine = fx.engine()
    seen: list[BaseException] = []

    def work(session: orm.Session) -> None:
        _write(session, "inside")
        with app_engine.connect() as other:  # reads stay allowed
            other.execute(sa.text("SELECT COUNT(*) FROM effects")).scalar()
        try:
            with orm.Session(app_engine) as other_session:
                other_session.execute(sa.text("INSERT INTO effects (unit) VALUES ('app')"))
                other_session.commit()
        except UnitEscape as err:
            seen.append(err)

    with pytest.raises(SeedFailed, match="transactional=False") as info:
        seedguard.apply(fx.engine(), seeds=[unit("other-engine", fn=work)])
    assert seen and "unit's session" in str(seen[0])
    assert info.value.rolled_back is True
    assert fx.effects() == []
    # Afterwards the app's engine writes as usual.
    with app_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO effects (unit) VALUES ('later')"))
    assert fx.effects() == ["later"]


def test_unit_may_read_and_write_another_database(fx: TestDatabase, tmp_path: Path) -> None:
    other = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with other.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INT)"))

    def work(session: orm.Session) -> None:
        _write(session, "inside")
        with other.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    seedguard.apply(fx.engine(), seeds=[unit("two-dbs", fn=work)])
    with other.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM t")).scalar() == 1
    other.dispose()
    assert fx.effects("escaper") == ["inside"]


def test_apply_from_a_thread_the_unit_started_raises_at_once(fx: TestDatabase) -> None:
    engine = fx.engine()
    seen: list[BaseException] = []

    def nested() -> None:
        seedguard.apply(engine, seeds=[unit("inner")], lock_timeout=30)

    def work(session: orm.Session) -> None:
        started = time.monotonic()
        seen.extend(_threads(1, nested))
        assert time.monotonic() - started < 10

    seedguard.apply(engine, seeds=[unit("outer", fn=work)])
    assert len(seen) == 1 and isinstance(seen[0], SeedguardError)
    assert "not re-entrant" in str(seen[0]) and "'outer'" in str(seen[0])



def test_apply_from_a_thread_the_unit_started_is_told_apart_from_an_ended_one(
        fx: TestDatabase) -> None:
    # Thread idents are reused: a thread started by the unit often gets the
    # ident of one that was alive when the unit started and has ended since.
    engine = fx.engine()
    seen: list[BaseException] = []
    done = threading.Event()
    earlier = threading.Thread(target=done.wait)
    earlier.start()

    def nested() -> None:
        seedguard.apply(engine, seeds=[unit("inner")], lock_timeout=5)

    def work(session: orm.Session) -> None:
        done.set()
        earlier.join()
        time.sleep(0.05)  # the ended thread's stack is free for the next one
        started = time.monotonic()
        seen.extend(_threads(1, nested))
        assert time.monotonic() - started < 4

    seedguard.apply(engine, seeds=[unit("outer", fn=work)])
    assert len(seen) == 1 and isinstance(seen[0], SeedguardError), seen
    assert "not re-entrant" in str(seen[0])


# -- units whose call does no work ----------------------------------------------------------


def test_generator_function_is_refused_at_declaration() -> None:
    def stray_yield(session: orm.Session) -> Iterator[None]:
        session.execute(sa.text("SELECT 1"))
        yield

    with pytest.raises(DefinitionError, match="generator"):
        seedguard.SeedUnit("stray", stray_yield)


class _Returns:
    """A callable whose call only builds the work: inspect cannot tell at declaration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, session: orm.Session) -> Any:
        if self.kind == "generator":
            return (_write(session, "never") for _ in range(1))

        async def later() -> None:
            _write(session, "never")

        return later()


@pytest.mark.parametrize("kind", ["generator", "coroutine"])
def test_unit_returning_unstarted_work_fails_with_nothing_recorded(fx: TestDatabase,
                                                                   kind: str) -> None:
    with pytest.raises(SeedFailed, match="apply_async" if kind == "coroutine" else "yield"):
        seedguard.apply(fx.engine(), seeds=[seedguard.SeedUnit("lazy", _Returns(kind))])
    assert fx.ledger() == []
    assert fx.effects() == []


@pytest.mark.parametrize("version", [0, 2**31, 2**40])
def test_version_outside_the_ledger_column_is_refused_at_declaration(version: int) -> None:
    with pytest.raises(DefinitionError, match="2147483647"):
        seedguard.SeedUnit("big", lambda s: None, version=version)


def test_largest_version_applies(fx: TestDatabase) -> None:
    seedguard.apply(fx.engine(), seeds=[unit("big", version=2**31 - 1)])
    assert fx.ledger() == [("big", 2**31 - 1)]


# -- where unqualified names resolve -----------------------------------------------------------


def test_search_path_set_by_a_unit_does_not_redirect_the_ledger(pg_fx: TestDatabase) -> None:
    pg_fx.execute("CREATE SCHEMA elsewhere")
    pg_fx.execute("CREATE TABLE elsewhere.effects (unit VARCHAR(255), value VARCHAR(255))")

    def work(session: orm.Session) -> None:
        session.execute(sa.text("SET search_path TO elsewhere"))
        _write(session, "in elsewhere")

    engine = pg_fx.engine()
    seedguard.apply(engine, seeds=[unit("moves", fn=work), unit("after-it")])
    assert pg_fx.ledger() == [("after-it", 1), ("moves", 1)]
    assert [r[0] for r in pg_fx.execute("SELECT value FROM elsewhere.effects")] == ["in elsewhere"]


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_use_other_database_does_not_redirect_the_ledger(mariadb_fx: TestDatabase,
                                                         fails: bool) -> None:
    def work(session: orm.Session) -> None:
        session.execute(sa.text("USE information_schema"))
        session.execute(sa.text("SELECT COUNT(*) FROM tables")).scalar()
        if fails:
            raise RuntimeError("fails after USE")

    engine = mariadb_fx.engine()
    if fails:
        with pytest.raises(SeedFailed) as info:
            seedguard.apply(engine, seeds=[unit("moves", fn=work)])
        assert info.value.rolled_back is True
    else:
        seedguard.apply(engine, seeds=[unit("moves", fn=work)])
    seedguard.apply(engine, seeds=[unit("after-it")])
    expected = [("after-it", 1)] if fails else [("after-it", 1), ("moves", 1)]
    assert mariadb_fx.ledger() == expected


# -- seedguard's own sessions under the server's session limits ------------------------------------


def _hold_file_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another applier on this host: holds the file lock for ``seconds``."""
    code = ("import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); "
            "lock.acquire(); print('held', flush=True); time.sleep(float(sys.argv[2]))")
    child = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def test_waiter_survives_idle_session_timeout(pg_fx: TestDatabase, tmp_path: Path) -> None:
    database = sa.engine.make_url(pg_fx.url).database
    pg_fx.execute(f"ALTER DATABASE {database} SET idle_session_timeout = '1s'")
    lock_path = tmp_path / "apply.lock"
    # A first look puts a connection in seedguard's pool; it idles there while
    # this applier waits for the file lock, and the server closes it.
    seedguard.apply(pg_fx.url, seeds=[], lock_path=lock_path)
    child = _hold_file_lock(lock_path, 3)
    try:
        result = seedguard.apply(pg_fx.url, seeds=[unit("after-wait")], lock_path=lock_path,
                                 lock_timeout=30)
    finally:
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
    assert [u.name for u in result.applied] == ["after-wait"]


def test_session_ended_by_the_server_names_the_setting(pg_fx: TestDatabase,
                                                       tmp_path: Path) -> None:
    database = sa.engine.make_url(pg_fx.url).database
    pg_fx.execute(f"ALTER DATABASE {database} SET idle_session_timeout = '1s'")
    engine = pg_fx.engine()  # the app's engine, without pool_pre_ping
    lock_path = tmp_path / "apply.lock"
    with engine.connect() as conn:  # a pooled connection that the server will close
        conn.execute(sa.text("SELECT 1"))
    time.sleep(2)
    with pytest.raises(SeedguardError, match="idle_session_timeout"):
        seedguard.apply(engine, seeds=[unit("after-wait")], lock_path=lock_path)


APP_ENGINE_SEEDS = '''
import sqlalchemy as sa
from sqlalchemy.orm import Session
import seedguard

engine = sa.create_engine({url!r})  # the app's module-level engine (app.core.db)

@seedguard.seed("superuser")
def superuser(session):
    with Session(engine) as own:  # the FastAPI template's initial_data.init()
        own.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('superuser', 'x')"))
        own.commit()
'''


def test_cli_refuses_a_write_through_the_apps_module_level_engine(
        fx: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from _support import write_module
    from click.testing import CliRunner

    from seedguard.cli import cli
    from seedguard.registry import default_registry

    default_registry.clear()
    name = f"seeds_{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, name, APP_ENGINE_SEEDS.format(url=fx.url))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["--url", fx.url, "--seeds", name, "upgrade"],
                                    catch_exceptions=False)
    finally:
        default_registry.clear()
        sys.modules[name].engine.dispose()
    assert result.exit_code == 1
    assert "transactional=False" in result.output and "rolled back" in result.output
    assert fx.effects() == []
    assert fx.ledger() == []
