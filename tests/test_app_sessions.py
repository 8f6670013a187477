"""Units written the way Flask and SQLAlchemy tutorials write database code.

``db.session``, ``Model.query``, helpers that commit, plain ``scoped_session``s:
while a unit runs they are the unit's session, so their work commits with the
unit's ledger row or not at all. Writes that would go around the unit are
refused before they reach the database.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import orm
from sqlalchemy.pool import StaticPool

import seedguard
from seedguard import SeedFailed
from seedguard.flask import SeedGuard


class FlaskApp:
    """A flasky-style app: Role with the classic ``insert_roles()`` helper, and User."""

    def __init__(self, url: str) -> None:
        self.app = Flask("tutorial")
        self.app.config["SQLALCHEMY_DATABASE_URI"] = url
        self.db = db = SQLAlchemy(self.app)

        class Role(db.Model):  # type: ignore[name-defined,misc]
            id = db.Column(db.Integer, primary_key=True)
            name = db.Column(db.String(64), unique=True)
            permissions = db.Column(db.Integer)

            @staticmethod
            def insert_roles() -> None:
                # As in Flask tutorials: query, add, commit through db.session.
                for name, permissions in {"User": 1, "Moderator": 3, "Administrator": 7}.items():
                    role = Role.query.filter_by(name=name).first()
                    if role is None:
                        role = Role(name=name)
                    role.permissions = permissions
                    db.session.add(role)
                db.session.commit()

        class User(db.Model):  # type: ignore[name-defined,misc]
            id = db.Column(db.Integer, primary_key=True)
            username = db.Column(db.String(64), unique=True)
            role_id = db.Column(db.Integer, db.ForeignKey(Role.id), nullable=False)

            def __init__(self, **kwargs: Any) -> None:
                # flasky's User.__init__ adds itself to db.session.
                super().__init__(**kwargs)
                db.session.add(self)

        self.Role = Role
        self.User = User
        SeedGuard(self.app, db)
        with self.app.app_context():
            db.create_all()

    def count(self, model: Any) -> int:
        with self.app.app_context():
            return int(self.db.session.query(model).count())


@pytest.fixture
def flask_app(db: TestDatabase) -> Iterator[FlaskApp]:
    app = FlaskApp(db.url)
    yield app
    with app.app.app_context():
        app.db.engine.dispose()


def test_insert_roles_helper_applies_once(flask_app: FlaskApp, db: TestDatabase) -> None:
    Role = flask_app.Role

    def roles() -> None:
        Role.insert_roles()

    units = [seedguard.SeedUnit("roles", roles)]
    with flask_app.app.app_context():
        first = seedguard.apply(seeds=units)
        second = seedguard.apply(seeds=units)
    assert [u.name for u in first.applied] == ["roles"]
    assert second.applied == []
    assert flask_app.count(Role) == 3
    assert db.ledger() == [("roles", 1)]


def test_failing_unit_leaves_nothing_of_db_session_work(flask_app: FlaskApp,
                                                       db: TestDatabase) -> None:
    Role = flask_app.Role

    def broken() -> None:
        Role.insert_roles()  # commits through db.session: only a savepoint
        raise RuntimeError("boom after writing")

    def fixed() -> None:
        Role.insert_roles()

    with flask_app.app.app_context():
        with pytest.raises(SeedFailed, match=r"boom after writing.*rolled back"):
            seedguard.apply(seeds=[seedguard.SeedUnit("roles", broken)])
        assert flask_app.count(Role) == 0
        assert db.ledger() == []
        result = seedguard.apply(seeds=[seedguard.SeedUnit("roles", fixed)])
    assert [u.name for u in result.applied] == ["roles"]
    assert flask_app.count(Role) == 3


def test_session_argument_and_db_session_are_one(flask_app: FlaskApp, db: TestDatabase) -> None:
    Role, User, fsa = flask_app.Role, flask_app.User, flask_app.db
    seen: list[bool] = []

    def admin(session: orm.Session) -> None:
        seen.append(session is fsa.session())
        role = Role(name="admin", permissions=7)
        session.add(role)  # the parent through the argument ...
        session.flush()
        User(username="root", role_id=role.id)  # ... the child through db.session
        fsa.session.commit()
        assert Role.query.filter_by(name="admin").one().id == role.id

    with flask_app.app.app_context():
        seedguard.apply(seeds=[seedguard.SeedUnit("admin", admin)])
    assert seen == [True]
    assert flask_app.count(User) == 1


def test_db_session_is_the_apps_own_again_after_apply_and_failure(
        flask_app: FlaskApp, db: TestDatabase) -> None:
    Role, fsa = flask_app.Role, flask_app.db
    unit_sessions: list[orm.Session] = []

    def ok() -> None:
        unit_sessions.append(fsa.session())
        fsa.session.add(Role(name="ok"))

    def broken() -> None:
        unit_sessions.append(fsa.session())
        fsa.session.add(Role(name="broken"))
        raise RuntimeError("boom")

    with flask_app.app.app_context():
        before = fsa.session()
        seedguard.apply(seeds=[seedguard.SeedUnit("ok", ok)])
        assert fsa.session() is before
        with pytest.raises(SeedFailed):
            seedguard.apply(seeds=[seedguard.SeedUnit("broken", broken)])
        assert fsa.session() is before
        assert all(s is not before for s in unit_sessions)
        # Nothing of the units' sessions leaks into the app's: it works as usual.
        assert not before.new
        fsa.session.add(Role(name="later"))
        fsa.session.commit()
        names = sorted(r.name for r in Role.query.all())
    assert names == ["later", "ok"]


def test_plain_scoped_session_joins_through_apply_argument(db: TestDatabase) -> None:
    engine = db.engine()
    SessionLocal = orm.scoped_session(orm.sessionmaker(bind=engine))
    db.execute("CREATE TABLE items (name VARCHAR(40) PRIMARY KEY)")

    def add_item(name: str) -> None:  # a helper of the app's, committing as apps do
        SessionLocal.execute(sa.text("INSERT INTO items (name) VALUES (:n)"), {"n": name})
        SessionLocal.commit()

    def broken() -> None:
        add_item("a")
        raise RuntimeError("boom")

    def fixed() -> None:
        add_item("a")
        add_item("b")

    with pytest.raises(SeedFailed):
        seedguard.apply(engine, seeds=[seedguard.SeedUnit("items", broken)],
                        scoped_sessions=[SessionLocal])
    assert db.execute("SELECT name FROM items") == []
    seedguard.apply(engine, seeds=[seedguard.SeedUnit("items", fixed)],
                    scoped_sessions=[SessionLocal])
    assert [r[0] for r in db.execute("SELECT name FROM items ORDER BY name")] == ["a", "b"]
    assert not SessionLocal.registry.has()  # left as it was: empty


@pytest.mark.parametrize("writer", ["engine.begin", "Session(engine)"])
def test_writes_on_other_connections_are_refused_before_they_run(
        db: TestDatabase, writer: str) -> None:
    db.create_effects_table()
    engine = db.engine()

    def around(session: orm.Session) -> None:
        # Reads on another connection are fine ...
        with engine.connect() as other:
            other.execute(sa.text("SELECT COUNT(*) FROM effects")).scalar()
        session.execute(sa.text("INSERT INTO effects (unit) VALUES ('inside')"))
        # ... a write is not: it would commit outside the unit's transaction.
        if writer == "engine.begin":
            with engine.begin() as other:
                other.execute(sa.text("INSERT INTO effects (unit) VALUES ('around')"))
        else:
            with orm.Session(engine) as other_session:
                other_session.execute(sa.text("INSERT INTO effects (unit) VALUES ('around')"))
                other_session.commit()

    with pytest.raises(SeedFailed, match=r"the session argument, db\.session, or "
                                         r"apply\(scoped_sessions=\.\.\.\)") as info:
        seedguard.apply(engine, seeds=[seedguard.SeedUnit("around", around)])
    assert "rolled back" in str(info.value)
    assert db.effects() == []
    assert db.ledger() == []


def test_refusal_caught_by_the_unit_still_fails_it(db: TestDatabase) -> None:
    db.create_effects_table()
    engine = db.engine()

    def swallowing(session: orm.Session) -> None:
        try:
            with engine.begin() as other:
                other.execute(sa.text("INSERT INTO effects (unit) VALUES ('around')"))
        except Exception:
            pass  # a unit that hides errors must not be recorded as applied

    with pytest.raises(SeedFailed, match="other than the unit's own"):
        seedguard.apply(engine, seeds=[seedguard.SeedUnit("swallowing", swallowing)])
    assert db.ledger() == []


def test_static_pool_never_records_a_failed_unit(tmp_path: Path) -> None:
    # One DB-API connection for everyone: a second Session's commit would be
    # the unit's commit, ledger row included.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'static.db'}", poolclass=StaticPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE effects (unit VARCHAR(40))"))

    def around(session: orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit) VALUES ('inside')"))
        with orm.Session(engine) as other:
            other.execute(sa.text("SELECT COUNT(*) FROM effects"))
            other.commit()
        raise RuntimeError("boom")

    with pytest.raises(SeedFailed, match="StaticPool"):
        seedguard.apply(engine, seeds=[seedguard.SeedUnit("around", around)])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM effects")).scalar() == 0
        assert conn.execute(sa.text("SELECT COUNT(*) FROM seedguard_ledger")).scalar() == 0
    engine.dispose()


def test_in_memory_flask_app_seeds_through_db_session() -> None:
    # Flask-SQLAlchemy configures sqlite:// with a StaticPool, as in test suites.
    app = FlaskApp("sqlite://")
    Role = app.Role

    def roles() -> None:
        Role.insert_roles()

    try:
        with app.app.app_context():
            result = seedguard.apply(seeds=[seedguard.SeedUnit("roles", roles)],
                                     lock_path=None)
            assert [u.name for u in result.applied] == ["roles"]
            assert Role.query.count() == 3
    finally:
        with app.app.app_context():
            app.db.engine.dispose()  # its StaticPool's one connection


def test_failure_shows_the_drivers_error(db: TestDatabase) -> None:
    db.execute("CREATE TABLE things (name VARCHAR(40) PRIMARY KEY)")

    def duplicate(session: orm.Session) -> None:
        session.execute(sa.text("INSERT INTO things (name) VALUES ('x')"))
        session.execute(sa.text("INSERT INTO things (name) VALUES ('x')"))

    with pytest.raises(SeedFailed) as info:
        seedguard.apply(db.url, seeds=[seedguard.SeedUnit("duplicate", duplicate)])
    driver_words = {"sqlite": "UNIQUE constraint failed", "postgresql": "UniqueViolation",
                    "mariadb": "Duplicate entry"}[db.kind]
    assert driver_words in str(info.value)
    assert "(Background on this error" not in str(info.value)


def test_database_is_locked_names_the_likely_cause(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE effects (unit VARCHAR(40))"))
    engine.dispose()

    def raw_connection_write(session: orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit) VALUES ('inside')"))
        other = sqlite3.connect(path, timeout=0.1)  # not seen by SQLAlchemy's events
        try:
            other.execute("INSERT INTO effects (unit) VALUES ('around')")
        finally:
            other.close()

    with pytest.raises(SeedFailed, match="database is locked; most likely another connection"):
        seedguard.apply(url, seeds=[seedguard.SeedUnit("raw", raw_connection_write)])


FLASK_CLI_APP = '''
import os
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
import seedguard
from seedguard.flask import SeedGuard

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["APP_DATABASE_URL"]
db = SQLAlchemy(app)


class Role(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64), unique=True)

    @staticmethod
    def insert_roles():
        for name in ("User", "Administrator"):
            if Role.query.filter_by(name=name).first() is None:
                db.session.add(Role(name=name))
        db.session.commit()


@seedguard.seed("roles")
def roles():
    Role.insert_roles()
    if os.environ.get("BREAK_ROLES"):
        raise RuntimeError("roles broke after writing")


SeedGuard(app, db, seeds=__name__)
with app.app_context():
    db.create_all()
'''


def test_flask_seedguard_upgrade_with_db_session_units(db: TestDatabase, tmp_path: Path) -> None:
    (tmp_path / "tutorial_app.py").write_text(textwrap.dedent(FLASK_CLI_APP))
    env = child_env(tmp_path)
    env["APP_DATABASE_URL"] = db.url
    command = [sys.executable, "-m", "flask", "--app", "tutorial_app", "seedguard", "upgrade"]

    broken = subprocess.run(command, cwd=tmp_path, env={**env, "BREAK_ROLES": "1"},
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1, broken.stderr
    assert "roles broke after writing" in broken.stderr
    assert db.execute("SELECT name FROM role") == []
    assert db.ledger() == []

    fixed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert fixed.returncode == 0, fixed.stderr
    assert sorted(r[0] for r in db.execute("SELECT name FROM role")) == ["Administrator", "User"]
    assert db.ledger() == [("roles", 1)]
