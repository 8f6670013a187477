"""Flask-SQLAlchemy binds as targets: ``seed(..., bind="audit")``.

A unit with ``bind=K`` runs on bind K's database, is recorded in that
database's own ledger under its locks, and ``db.session`` inside it routes as
Flask-SQLAlchemy routes, inside the unit's transaction. A write through a model
of another database than the unit's own is refused before it happens, naming
the bind. ``apply()``, ``status()`` and ``check()`` in an app context cover
every bind (``bind_key=`` picks one); so do ``flask seedguard upgrade``,
``status`` and ``check`` (``--bind KEY``). A write through another bind's
engine from the unit's own code is refused too, naming the bind. ``stamp``,
``forget``, ``resolve`` and ``downgrade`` work on the ledger of the unit's own
bind under its locks; ``stamp --all``, ``forget --all`` and ``history`` cover
every bind. ``upgrade --schema`` in a Flask-Migrate ``--multidb`` project
migrates every bind once, under every bind's locks.

Each test runs on two SQLite files, and on server pairs (PostgreSQL default
with a MariaDB bind, and the other way round).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env
from conftest import make_database, selected_databases
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import seedguard
from seedguard import ConfigError, SeedFailed, api
from seedguard.flask import SeedGuard

PAIRS = [("sqlite", "sqlite"), ("postgresql", "mariadb"), ("mariadb", "postgresql")]


@dataclass
class BoundApp:
    app: Flask
    db: SQLAlchemy
    Role: Any
    Entry: Any
    main: TestDatabase
    audit: TestDatabase

    def rows(self, database: TestDatabase, table: str) -> int:
        return int(database.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


@pytest.fixture(params=PAIRS, ids=["sqlite+sqlite", "postgresql+mariadb", "mariadb+postgresql"])
def bound(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BoundApp]:
    main_kind, audit_kind = request.param
    for kind in {main_kind, audit_kind}:
        if kind not in selected_databases():
            pytest.skip(f"{kind} not in SEEDGUARD_TEST_DATABASES")
    (tmp_path / "main").mkdir()
    (tmp_path / "audit").mkdir()
    mains = make_database(main_kind, tmp_path / "main")
    audits = make_database(audit_kind, tmp_path / "audit")
    main = next(mains)
    audit = next(audits)
    app = Flask("bound")
    app.config["SQLALCHEMY_DATABASE_URI"] = main.url
    app.config["SQLALCHEMY_BINDS"] = {"audit": audit.url}
    db = SQLAlchemy(app)

    class Role(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(64), unique=True)

    class Entry(db.Model):  # type: ignore[name-defined,misc]
        __bind_key__ = "audit"
        __tablename__ = "entry"
        id = db.Column(db.Integer, primary_key=True)
        what = db.Column(db.String(64))

    SeedGuard(app, db)
    with app.app_context():
        db.create_all()
    # A table of the same name in the default database too (an older schema,
    # a shared migration): a write routed to the wrong database would succeed
    # there instead of failing loudly.
    main.execute("CREATE TABLE entry (id INTEGER PRIMARY KEY, what VARCHAR(64))")
    try:
        yield BoundApp(app, db, Role, Entry, main, audit)
    finally:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
        for gen in (audits, mains):
            gen.close()


def test_a_bind_unit_runs_on_its_database_and_is_recorded_in_its_ledger(
        bound: BoundApp) -> None:
    db, Entry, Role = bound.db, bound.Entry, bound.Role

    @seedguard.seed("roles")
    def roles() -> None:
        db.session.add(Role(name="admin"))

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        db.session.add(Entry(what="seeded"))
        db.session.commit()  # a savepoint of the unit's transaction on the audit database

    with bound.app.app_context():
        result = seedguard.apply()
    assert [u.name for u in result.applied] == ["roles", "audit-start"]
    assert bound.rows(bound.audit, "entry") == 1
    assert bound.rows(bound.main, "entry") == 0
    assert bound.main.ledger() == [("roles", 1)]
    assert bound.audit.ledger() == [("audit-start", 1)]
    with bound.app.app_context():
        again = seedguard.apply()
    assert again.applied == []
    assert sorted(u.name for u in again.skipped) == ["audit-start", "roles"]


def test_a_failing_bind_unit_leaves_nothing_on_its_database(bound: BoundApp) -> None:
    db, Entry = bound.db, bound.Entry

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        db.session.add(Entry(what="half"))
        db.session.commit()
        raise RuntimeError("boom")

    for _ in range(2):
        with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
            seedguard.apply()
        assert failed.value.rolled_back
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.rows(bound.main, "entry") == 0
    assert bound.audit.ledger() == []


def test_a_default_unit_writing_a_bind_model_is_refused_naming_the_bind(
        bound: BoundApp) -> None:
    db, Entry = bound.db, bound.Entry

    @seedguard.seed("wrong-place")
    def wrong_place() -> None:
        db.session.add(Entry(what="stray"))
        db.session.commit()

    for _ in range(2):
        with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
            seedguard.apply()
        assert "'audit'" in str(failed.value)
        assert "bind=" in str(failed.value)
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.rows(bound.main, "entry") == 0
    assert bound.main.ledger() == []


def test_a_bind_unit_writing_a_default_model_is_refused(bound: BoundApp) -> None:
    db, Role = bound.db, bound.Role

    @seedguard.seed("wrong-place", bind="audit")
    def wrong_place() -> None:
        db.session.add(Role(name="stray"))

    with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
        seedguard.apply()
    assert "default database" in str(failed.value)
    assert bound.rows(bound.main, "role") == 0
    assert bound.audit.ledger() == []


ESCAPES = ["engines", "get_engine", "core-table", "metadata-table"]


@pytest.mark.parametrize("how", ESCAPES)
def test_a_default_unit_writing_through_a_binds_engine_is_refused_naming_the_bind(
        bound: BoundApp, how: str) -> None:
    db, Role = bound.db, bound.Role
    # A plain Core table on the bind's metadata (db.Table(..., bind_key=) spelt out).
    audit_table = sa.Table("entry", db.metadatas["audit"], extend_existing=True)

    @seedguard.seed("wrong-place")
    def wrong_place() -> None:
        db.session.add(Role(name="own"))  # the unit's own work: rolled back with it
        db.session.flush()
        row = {"id": 1, "what": "stray"}
        if how == "engines":
            with db.engines["audit"].connect() as conn:
                conn.execute(sa.text("INSERT INTO entry (id, what) VALUES (:id, :what)"), row)
                conn.commit()
        elif how == "get_engine":
            with warnings.catch_warnings():  # deprecated in Flask-SQLAlchemy 3.1
                warnings.simplefilter("ignore", DeprecationWarning)
                engine = db.get_engine(bind_key="audit")
            with engine.begin() as conn:
                conn.execute(bound.Entry.__table__.insert(), row)
        elif how == "core-table":
            with db.engines["audit"].begin() as conn:
                conn.execute(sa.insert(audit_table), row)
        else:
            db.session.execute(sa.insert(audit_table), row)

    for _ in range(2):
        with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
            seedguard.apply()
        message = str(failed.value)
        assert "bind 'audit'" in message and "bind='audit'" in message, message
        assert failed.value.rolled_back
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.rows(bound.main, "entry") == 0
    assert bound.rows(bound.main, "role") == 0
    assert bound.main.ledger() == []


def test_a_raw_write_to_another_bind_is_refused_by_its_server(bound: BoundApp) -> None:
    # No SQLAlchemy event sees a DB-API cursor: the bind's connections that the
    # unit checks out are read-only at the database while it runs.
    db, Role = bound.db, bound.Role

    @seedguard.seed("raw-elsewhere")
    def raw_elsewhere() -> None:
        db.session.add(Role(name="own"))
        db.session.flush()
        connection = db.engines["audit"].raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("INSERT INTO entry (id, what) VALUES (1, 'raw')")
            connection.commit()
        finally:
            connection.close()

    with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
        seedguard.apply()
    assert failed.value.rolled_back
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.rows(bound.main, "role") == 0
    assert bound.main.ledger() == []
    # Afterwards the bind's connections write again (read-only only during the unit).
    with bound.app.app_context(), bound.db.engines["audit"].begin() as conn:
        conn.execute(sa.text("INSERT INTO entry (id, what) VALUES (2, 'app')"))
    assert bound.rows(bound.audit, "entry") == 1


def test_a_bind_unit_writing_through_the_default_engine_is_refused(bound: BoundApp) -> None:
    db, Entry = bound.db, bound.Entry

    @seedguard.seed("wrong-place", bind="audit")
    def wrong_place() -> None:
        db.session.add(Entry(what="own"))
        db.session.flush()
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO role (name) VALUES ('stray')"))

    with bound.app.app_context(), pytest.raises(SeedFailed) as failed:
        seedguard.apply()
    assert "default database" in str(failed.value)
    assert "without bind=" in str(failed.value)
    assert bound.rows(bound.main, "role") == 0
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.audit.ledger() == []


def test_another_thread_may_write_to_a_bind_while_a_unit_runs(bound: BoundApp) -> None:
    # A request served meanwhile is not the unit's doing: only the unit's own
    # context is held to its database.
    db, Role = bound.db, bound.Role
    app = bound.app

    def request() -> None:
        with app.app_context(), db.engines["audit"].begin() as conn:
            conn.execute(sa.text("INSERT INTO entry (id, what) VALUES (5, 'request')"))

    @seedguard.seed("roles")
    def roles() -> None:
        db.session.add(Role(name="admin"))
        worker = threading.Thread(target=request)
        worker.start()
        worker.join(30)

    with app.app_context():
        seedguard.apply()
    assert bound.rows(bound.audit, "entry") == 1
    assert bound.main.ledger() == [("roles", 1)]


def test_a_unit_reads_another_bind_as_flask_sqlalchemy_routes(bound: BoundApp) -> None:
    db, Entry, Role = bound.db, bound.Entry, bound.Role
    bound.audit.execute("INSERT INTO entry (id, what) VALUES (1, 'admin')")

    @seedguard.seed("roles-from-audit")
    def roles_from_audit() -> None:
        for entry in Entry.query.all():
            db.session.add(Role(name=entry.what))

    with bound.app.app_context():
        seedguard.apply()
    assert [r[0] for r in bound.main.execute("SELECT name FROM role")] == ["admin"]


def test_a_data_seed_on_a_bind(bound: BoundApp) -> None:
    seedguard.data_seed("entries", table=bound.Entry, key="id", bind="audit",
                        rows=[{"id": 1, "what": "a"}, {"id": 2, "what": "b"}])
    with bound.app.app_context():
        seedguard.apply()
    assert bound.rows(bound.audit, "entry") == 2
    assert bound.audit.ledger() == [("entries", 1)] or \
        [name for name, _ in bound.audit.ledger()] == ["entries"]
    assert bound.main.ledger() == []


def test_status_check_and_bind_key_cover_every_bind(bound: BoundApp) -> None:
    db, Entry, Role = bound.db, bound.Entry, bound.Role

    @seedguard.seed("roles")
    def roles() -> None:
        db.session.add(Role(name="admin"))

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        db.session.add(Entry(what="seeded"))

    with bound.app.app_context():
        assert not api.check().ok
        seedguard.apply(bind_key="audit")
        status = api.status()
        assert {(u.name, u.state) for u in status.units} == {
            ("roles", "pending"), ("audit-start", "applied")}
        assert not status.ok
        seedguard.apply()
        assert api.check().ok
    assert bound.main.ledger() == [("roles", 1)]
    assert bound.audit.ledger() == [("audit-start", 1)]


def test_a_bind_unit_without_an_app_names_the_bind(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with pytest.raises(ConfigError, match="'audit'"):
        seedguard.apply(engine)
    # Told which database is the bind's, it runs there.
    result = seedguard.apply(engine, bind_key="audit")
    assert [u.name for u in result.applied] == ["audit-start"]
    engine.dispose()


APP = '''
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

db = SQLAlchemy()
guard = SeedGuard(seeds="bound_seeds")


class Entry(db.Model):
    __bind_key__ = "audit"
    __tablename__ = "entry"
    id = db.Column(db.Integer, primary_key=True)
    what = db.Column(db.String(64))


class Mark(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    v = db.Column(db.Integer)


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = {main!r}
    app.config["SQLALCHEMY_BINDS"] = {{"audit": {audit!r}}}
    db.init_app(app)
    guard.init_app(app)
    with app.app_context():
        db.create_all()
    return app
'''

SEEDS = '''
import seedguard
from bound_app import db, Entry, Mark


@seedguard.seed("roles")
def roles():
    db.session.add(Mark(v=1))


@seedguard.seed("audit-start", bind="audit")
def audit_start():
    db.session.add(Entry(what="cli"))
'''


def test_flask_cli_upgrade_status_check_cover_every_bind(bound: BoundApp,
                                                           tmp_path: Path) -> None:
    work = tmp_path / "cli"
    work.mkdir()
    (work / "bound_app.py").write_text(APP.format(main=bound.main.url, audit=bound.audit.url))
    (work / "bound_seeds.py").write_text(textwrap.dedent(SEEDS))

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "bound_app", "seedguard", *args],
            cwd=work, env=child_env(work), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)

    checked = flask("check")
    assert checked.returncode == 3, checked.stdout + checked.stderr
    only_audit = flask("upgrade", "--bind", "audit", "--json")
    assert only_audit.returncode == 0, only_audit.stderr
    assert [u["name"] for u in json.loads(only_audit.stdout)["applied"]] == ["audit-start"]
    assert flask("check", "--bind", "audit").returncode == 0
    assert flask("check").returncode == 3
    status = flask("status", "--json")
    assert status.returncode == 0, status.stderr
    states = {u["name"]: u["state"] for u in json.loads(status.stdout)["units"]}
    assert states == {"roles": "pending", "audit-start": "applied"}
    upgraded = flask("upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert flask("check").returncode == 0
    unknown = flask("upgrade", "--bind", "nope")
    assert unknown.returncode == 2
    assert "'nope'" in unknown.stderr and "'audit'" in unknown.stderr
    assert bound.audit.ledger() == [("audit-start", 1)]
    assert bound.main.ledger() == [("roles", 1)]
    assert bound.rows(bound.audit, "entry") == 1
    assert bound.rows(bound.main, "mark") == 1


# -- the ledger commands: on the bind a unit belongs to -------------------------------


def _status(database: TestDatabase, name: str) -> list[str]:
    return [row[0] for row in database.execute(
        "SELECT status FROM seedguard_ledger WHERE name = :n", n=name)]


def test_stamp_forget_and_resolve_work_on_the_units_bind(bound: BoundApp) -> None:
    @seedguard.seed("roles")
    def roles() -> None:
        pass

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with bound.app.app_context():
        assert api.stamp(None, "audit-start").action == "stamped"
        assert bound.audit.ledger() == [("audit-start", 1)]
        assert bound.main.ledger() == []
        # bind_key= names the bind the unit is on: the same database.
        assert api.stamp(None, "audit-start", bind_key="audit").action == "unchanged"
        assert api.stamp(None, "roles").action == "stamped"
        assert bound.main.ledger() == [("roles", 1)]
        bound.audit.execute("UPDATE seedguard_ledger SET status = 'running' "
                            "WHERE name = 'audit-start'")
        assert api.resolve(None, "audit-start", outcome="applied").versions == [1]
        assert _status(bound.audit, "audit-start") == ["applied"]
        assert api.forget(None, "audit-start").action == "forgotten"
        assert bound.audit.ledger() == []
        assert bound.main.ledger() == [("roles", 1)]


def test_a_name_on_another_bind_is_refused_naming_where_it_lives(bound: BoundApp) -> None:
    @seedguard.seed("roles")
    def roles() -> None:
        pass

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with bound.app.app_context():
        with pytest.raises(ConfigError, match="default database") as err:
            api.stamp(None, "roles", bind_key="audit")
        assert "'audit'" in str(err.value)
        with pytest.raises(ConfigError, match="bind 'audit'"):
            api.forget(None, "audit-start", bind_key="nope")
    assert bound.main.ledger() == [] and bound.audit.ledger() == []


def test_ledger_commands_without_an_app_need_the_bind_named(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    # Without an app context only bind_key= says which database this is.
    with pytest.raises(ConfigError, match="'audit'"):
        api.stamp(engine, "audit-start")
    assert api.stamp(engine, "audit-start", bind_key="audit").action == "stamped"
    assert [row.name for row in api.history(engine).rows] == ["audit-start"]
    assert api.forget(engine, "audit-start", bind_key="audit").action == "forgotten"
    engine.dispose()


def test_an_orphan_is_found_in_the_ledger_that_holds_it(bound: BoundApp) -> None:
    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with bound.app.app_context():
        seedguard.apply()
    from seedguard.registry import default_registry

    default_registry.clear()  # the unit was removed from the code: an orphaned row
    with bound.app.app_context():
        assert api.forget(None, "audit-start").action == "forgotten"
    assert bound.audit.ledger() == []


def test_history_stamp_all_and_forget_all_cover_every_bind(bound: BoundApp) -> None:
    @seedguard.seed("roles")
    def roles() -> None:
        pass

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    from seedguard.adopt import stamp_all

    with bound.app.app_context():
        changes = stamp_all()
        assert [(c.name, c.bind) for c in changes] == [("roles", None), ("audit-start", "audit")]
        assert bound.main.ledger() == [("roles", 1)]
        assert bound.audit.ledger() == [("audit-start", 1)]
        history = api.history()
        assert sorted(row.name for row in history.rows) == ["audit-start", "roles"]
        assert [row.name for row in history.binds["audit"].rows] == ["audit-start"]
        assert [row.name for row in api.history(bind_key="audit").rows] == ["audit-start"]
        assert api.check().ok
        audit_only = stamp_all(bind_key="audit")
        assert audit_only == []
        forgotten = api.forget_all(bind_key="audit")
        assert [(c.name, c.bind) for c in forgotten] == [("audit-start", "audit")]
        assert bound.main.ledger() == [("roles", 1)]
        api.forget_all()
    assert bound.main.ledger() == [] and bound.audit.ledger() == []


def test_downgrade_undoes_a_data_seed_on_its_bind(bound: BoundApp) -> None:
    from seedguard.downgrade import downgrade

    seedguard.data_seed("entries", table=bound.Entry, key="id", bind="audit",
                        rows=[{"id": 1, "what": "a"}, {"id": 2, "what": "b"}])
    with bound.app.app_context():
        seedguard.apply()
        assert bound.rows(bound.audit, "entry") == 2
        result = downgrade(None, "entries")
    assert (result.action, result.deleted) == ("downgraded", 2)
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.audit.ledger() == []
    assert bound.main.ledger() == []


def test_diff_compares_a_bind_data_seed_on_its_database(bound: BoundApp) -> None:
    from seedguard.diff import diff

    seedguard.data_seed("entries", table=bound.Entry, key="id", bind="audit",
                        rows=[{"id": 1, "what": "a"}])
    with bound.app.app_context():
        seedguard.apply()
    bound.audit.execute("UPDATE entry SET what = 'changed' WHERE id = 1")
    with bound.app.app_context():
        found = diff()
        assert [(row.unit, row.state) for row in found.rows] == [("entries", "changed")]
        assert diff(name="entries", bind_key="audit").compared == ["entries"]
        with pytest.raises(ConfigError, match="bind 'audit'"):
            diff(name="entries", bind_key="nope")


def test_wait_covers_every_bind(bound: BoundApp) -> None:
    from seedguard import WaitTimeout
    from seedguard.readiness import wait

    @seedguard.seed("roles")
    def roles() -> None:
        pass

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with bound.app.app_context():
        seedguard.apply(bind_key="audit")
        with pytest.raises(WaitTimeout) as waited:
            wait(timeout=0.3)
        assert waited.value.pending == ["roles"]
        assert [u.name for u in wait(bind_key="audit", timeout=5).skipped] == ["audit-start"]
        seedguard.apply()
        assert sorted(u.name for u in wait(timeout=5).skipped) == ["audit-start", "roles"]


def test_the_ledger_commands_wait_for_the_binds_locks(bound: BoundApp) -> None:
    from seedguard import LockTimeout
    from seedguard.config import resolve
    from seedguard.locks import ledger_locks

    @seedguard.seed("audit-start", bind="audit")
    def audit_start() -> None:
        pass

    with bound.app.app_context():
        audit = bound.db.engines["audit"]
        settings = resolve(audit)
        file_lock, _, deadline = ledger_locks(audit, settings)
        file_lock.acquire(deadline)
        try:
            with pytest.raises(LockTimeout):
                api.stamp(resolve(None, lock_timeout=0.3), "audit-start")
        finally:
            file_lock.release()
    assert bound.audit.ledger() == []


def test_flask_cli_ledger_commands_work_on_each_units_bind(bound: BoundApp,
                                                          tmp_path: Path) -> None:
    work = tmp_path / "cli"
    work.mkdir()
    (work / "bound_app.py").write_text(APP.format(main=bound.main.url, audit=bound.audit.url))
    (work / "bound_seeds.py").write_text(textwrap.dedent(SEEDS) + textwrap.dedent('''
        seedguard.data_seed("entries", table=Entry, key="id", bind="audit",
                            rows=[{"id": 7, "what": "data"}])
    '''))

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "bound_app", "seedguard", *args],
            cwd=work, env=child_env(work), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)

    stamped = flask("stamp", "audit-start", "--yes", "--json")
    assert stamped.returncode == 0, stamped.stderr
    assert json.loads(stamped.stdout)["changes"] == [
        {"name": "audit-start", "action": "stamped", "versions": [1], "bind": "audit"}]
    assert bound.audit.ledger() == [("audit-start", 1)] and bound.main.ledger() == []
    wrong = flask("stamp", "roles", "--bind", "audit", "--yes")
    assert wrong.returncode == 2
    assert "default database" in wrong.stderr and "--bind" in wrong.stderr
    assert flask("forget", "audit-start", "--yes").returncode == 0
    assert bound.audit.ledger() == []
    every = flask("stamp", "--all", "--bind", "audit", "--yes", "--json")
    assert every.returncode == 0, every.stderr
    assert {c["name"] for c in json.loads(every.stdout)["changes"]} == {"audit-start", "entries"}
    assert bound.main.ledger() == []
    assert flask("forget", "entries", "--yes").returncode == 0
    assert flask("upgrade").returncode == 0
    assert bound.rows(bound.audit, "entry") == 1
    history = flask("history", "--json")
    assert history.returncode == 0, history.stderr
    document = json.loads(history.stdout)
    assert sorted(row["name"] for row in document["rows"]) == ["audit-start", "entries", "roles"]
    assert sorted(row["name"] for row in document["binds"]["audit"]["rows"]) == [
        "audit-start", "entries"]
    shown = flask("history")
    assert "bind 'audit'" in shown.stdout and "roles v1" in shown.stdout, shown.stderr
    only = flask("history", "--bind", "audit", "--json")
    assert "roles" not in {row["name"] for row in json.loads(only.stdout)["rows"]}
    undone = flask("downgrade", "entries", "--yes")
    assert undone.returncode == 0, undone.stderr
    assert bound.rows(bound.audit, "entry") == 0
    assert bound.audit.ledger() == [("audit-start", 1)]
    bound.audit.execute("UPDATE seedguard_ledger SET status = 'running' "
                        "WHERE name = 'audit-start'")
    settled = flask("resolve", "audit-start", "--retry", "--yes")
    assert settled.returncode == 0, settled.stderr
    assert bound.audit.ledger() == []
    assert flask("forget", "--all", "--yes").returncode == 0
    assert bound.main.ledger() == [] and bound.audit.ledger() == []


# -- the user's schema: one alembic upgrade for every bind (Flask-Migrate --multidb) ----

REV = "b1d5c0000001"

MIGRATED_APP = '''
import seedguard.alembic
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = {main!r}
app.config["SQLALCHEMY_BINDS"] = {{"audit": {audit!r}}}
db = SQLAlchemy(app)


class Role(db.Model):
    __tablename__ = "role"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64))


class Entry(db.Model):
    __bind_key__ = "audit"
    __tablename__ = "entry"
    id = db.Column(db.Integer, primary_key=True)
    what = db.Column(db.String(64))


Migrate(app, db, include_object=seedguard.alembic.include_object)
SeedGuard(app, db, seeds="migrated_seeds")
'''

MIGRATED_SEEDS = '''
import seedguard
from migrated_app import db, Entry, Role


@seedguard.seed("roles")
def roles():
    db.session.add(Role(name="admin"))


@seedguard.seed("audit-start", bind="audit", requires_revision={rev!r})
def audit_start():
    db.session.add(Entry(what="migrated"))
'''

# What `flask db migrate` writes for a --multidb project: one function per database.
MULTIDB_REVISION = '''
"""tables

Revision ID: {rev}
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = None
branch_labels = None
depends_on = None


def upgrade(engine_name):
    globals()["upgrade_%s" % engine_name]()


def downgrade(engine_name):
    globals()["downgrade_%s" % engine_name]()


def upgrade_():
    op.create_table("role", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(64)))


def downgrade_():
    op.drop_table("role")


def upgrade_audit():
    op.create_table("entry", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("what", sa.String(64)))


def downgrade_audit():
    op.drop_table("entry")
'''


@pytest.fixture(params=PAIRS, ids=["sqlite+sqlite", "postgresql+mariadb", "mariadb+postgresql"])
def multidb(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[tuple[TestDatabase, TestDatabase, Any]]:
    """Two empty databases and a `flask` runner in a Flask-Migrate --multidb project."""
    main_kind, audit_kind = request.param
    for kind in {main_kind, audit_kind}:
        if kind not in selected_databases():
            pytest.skip(f"{kind} not in SEEDGUARD_TEST_DATABASES")
    for name in ("main", "audit", "work"):
        (tmp_path / name).mkdir()
    mains = make_database(main_kind, tmp_path / "main")
    audits = make_database(audit_kind, tmp_path / "audit")
    main, audit = next(mains), next(audits)
    work = tmp_path / "work"
    (work / "migrated_app.py").write_text(MIGRATED_APP.format(main=main.url, audit=audit.url))
    (work / "migrated_seeds.py").write_text(MIGRATED_SEEDS.format(rev=REV))

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "migrated_app", *args],
            cwd=work, env=child_env(work), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)

    init = flask("db", "init", "--multidb")
    assert init.returncode == 0, init.stderr
    (work / "migrations" / "versions" / f"{REV}_tables.py").write_text(
        MULTIDB_REVISION.format(rev=REV))
    try:
        yield main, audit, flask
    finally:
        for gen in (audits, mains):
            gen.close()


def _version(database: TestDatabase) -> list[str]:
    if "alembic_version" not in database.tables():
        return []
    return [row[0] for row in database.execute("SELECT version_num FROM alembic_version")]


def test_upgrade_schema_migrates_every_bind_once_then_seeds_each(
        multidb: tuple[TestDatabase, TestDatabase, Any]) -> None:
    main, audit, flask = multidb
    first = flask("seedguard", "upgrade", "--schema", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    document = json.loads(first.stdout)
    assert document["migrated"] == [REV]
    assert [item["name"] for item in document["applied"]] == ["roles", "audit-start"]
    assert _version(main) == [REV] and _version(audit) == [REV]
    assert "entry" not in main.tables() and "role" not in audit.tables()
    assert [row[0] for row in audit.execute("SELECT what FROM entry")] == ["migrated"]
    assert [row[0] for row in main.execute("SELECT name FROM role")] == ["admin"]
    assert main.ledger() == [("roles", 1)] and audit.ledger() == [("audit-start", 1)]
    again = flask("seedguard", "upgrade", "--schema", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["migrated"] == []
    assert json.loads(again.stdout)["applied"] == []


@pytest.mark.parametrize("held, only", [("audit", None), ("main", "audit")])
def test_the_schema_upgrade_waits_for_every_binds_locks(
        multidb: tuple[TestDatabase, TestDatabase, Any], held: str, only: str | None) -> None:
    # Flask-Migrate's multidb upgrade migrates every bind: whichever units run,
    # it runs under the locks of every database it changes.
    from seedguard.locks import Deadline, FileLock, default_lock_path

    main, audit, flask = multidb
    other = audit if held == "audit" else main
    # The URL as the app's engine has it (Flask-SQLAlchemy adds charset= on MySQL).
    app = Flask("urls")
    app.config["SQLALCHEMY_DATABASE_URI"] = other.url
    with app.app_context():
        url = SQLAlchemy(app).engine.url
    lock = FileLock(default_lock_path(url))
    lock.acquire(Deadline(5))
    try:
        bind = ["--bind", only] if only else []
        waited = flask("seedguard", "upgrade", "--schema", "--lock-timeout", "1", *bind)
    finally:
        lock.release()
    assert waited.returncode == 4, waited.stdout + waited.stderr
    assert _version(main) == [] and _version(audit) == []
    assert main.ledger() == [] and audit.ledger() == []


def test_two_schema_upgrades_at_once_migrate_each_database_once(
        multidb: tuple[TestDatabase, TestDatabase, Any]) -> None:
    # A full run and a run for the audit bind only, started together: each
    # waits for the other's locks, so alembic runs on each database once.
    main, audit, flask = multidb
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda bind: flask("seedguard", "upgrade", "--schema", "--json",
                                                "--lock-timeout", "60", *bind),
                             [[], ["--bind", "audit"]]))
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    documents = [json.loads(run.stdout) for run in runs]
    assert sorted(len(document["migrated"]) for document in documents) == [0, 1]
    applied = sorted(item["name"] for document in documents for item in document["applied"])
    assert applied == ["audit-start", "roles"]
    assert _version(main) == [REV] and _version(audit) == [REV]
    assert main.ledger() == [("roles", 1)] and audit.ledger() == [("audit-start", 1)]
