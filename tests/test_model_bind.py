"""Flask-SQLAlchemy binds as targets: ``seed(..., bind="audit")``.

A unit with ``bind=K`` runs on bind K's database, is recorded in that
database's own ledger under its locks, and ``db.session`` inside it routes as
Flask-SQLAlchemy routes, inside the unit's transaction. A write through a model
of another database than the unit's own is refused before it happens, naming
the bind. ``apply()``, ``status()`` and ``check()`` in an app context cover
every bind (``bind_key=`` picks one); so do ``flask seedguard upgrade``,
``status`` and ``check`` (``--bind KEY``).

Each test runs on two SQLite files, and on server pairs (PostgreSQL default
with a MariaDB bind, and the other way round).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
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
