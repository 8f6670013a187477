"""Print the idiom table: how each way of writing database code behaves inside a unit.

For every idiom and database, a unit does the idiom (one row written) and then
fails; then the same unit runs without failing. Each cell says what happened:

- ``atomic``: the failing unit left nothing, and the unit then applied once;
- ``refused``: seedguard failed the unit before the idiom's statement ran
  (nothing written, no ledger row), with the message's first words;
- ``BROKEN``: anything else (work left behind, a ledger row for missing work).

Usage (servers as in the test suite; a database is created and dropped each run)::

    .venv/bin/python scripts/idioms.py [--databases sqlite,postgresql,mariadb]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import orm

import seedguard
from seedguard.flask import SeedGuard

SERVERS = {
    "postgresql": os.environ.get("SEEDGUARD_TEST_PG_URL",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("SEEDGUARD_TEST_MYSQL_URL",
                              "mysql+pymysql://root@127.0.0.1:3306/test"),
}


class Context:
    """What an idiom may use: the unit's session, the Flask app's db, other sessions."""

    def __init__(self, url: str) -> None:
        self.app = Flask("idioms")
        self.app.config["SQLALCHEMY_DATABASE_URI"] = url
        self.db = db = SQLAlchemy(self.app)

        class Role(db.Model):  # type: ignore[name-defined,misc]
            id = db.Column(db.Integer, primary_key=True)
            name = db.Column(db.String(64), unique=True)

        self.Role = Role
        SeedGuard(self.app, db)
        with self.app.app_context():
            db.create_all()
            self.engine = db.engine
        self.scoped = orm.scoped_session(orm.sessionmaker(bind=self.engine))
        self.session: orm.Session | None = None

    def insert(self, target: Any) -> None:
        target.execute(sa.text("INSERT INTO role (name) VALUES ('x')"))

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM role")).scalar() or 0)

    def ledger(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("seedguard_ledger"):
                return 0
            return int(conn.execute(sa.text(
                "SELECT COUNT(*) FROM seedguard_ledger WHERE status = 'applied'")).scalar() or 0)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM role"))
            if sa.inspect(conn).has_table("seedguard_ledger"):
                conn.execute(sa.text("DELETE FROM seedguard_ledger"))


def _db_session_add(c: Context) -> None:
    c.db.session.add(c.Role(name="x"))


def _db_session_commit(c: Context) -> None:
    c.db.session.add(c.Role(name="x"))
    c.db.session.commit()


def _model_query_helper(c: Context) -> None:
    if c.Role.query.filter_by(name="x").first() is None:
        c.db.session.add(c.Role(name="x"))
    c.db.session.commit()


def _engine_begin(c: Context) -> None:
    with c.engine.begin() as conn:
        c.insert(conn)


def _other_session(c: Context) -> None:
    with orm.Session(c.engine) as other:
        c.insert(other)
        other.commit()


def _commit_text(c: Context) -> None:
    assert c.session is not None
    c.insert(c.session)
    c.session.execute(sa.text("COMMIT"))


def _connection_commit(c: Context) -> None:
    assert c.session is not None
    c.insert(c.session)
    c.session.connection().commit()


def _ddl_then_insert(c: Context) -> None:
    assert c.session is not None
    c.session.execute(sa.text("CREATE TABLE IF NOT EXISTS extra (id INTEGER PRIMARY KEY)"))
    c.insert(c.session)


IDIOMS: dict[str, Callable[[Context], None]] = {
    "session argument": lambda c: c.insert(c.session),
    "db.session.add (no commit)": _db_session_add,
    "db.session.add + commit": _db_session_commit,
    "Model.query helper that commits": _model_query_helper,
    "scoped_session (scoped_sessions=)": lambda c: (c.insert(c.scoped), c.scoped.commit()),
    "engine.begin() write": _engine_begin,
    "Session(engine) write": _other_session,
    "text('COMMIT')": _commit_text,
    "session.connection().commit()": _connection_commit,
    "CREATE TABLE, then INSERT": _ddl_then_insert,
}


REASONS = (
    ("other than the unit's own", "a write on another connection"),
    ("commit implicitly", "MySQL/MariaDB commit implicitly"),
    ("would end the unit's transaction", "it ends the unit's transaction"),
)


def cell(c: Context, idiom: Callable[[Context], None]) -> str:
    c.reset()

    def unit_body(fail: bool) -> Callable[[orm.Session], None]:
        def body(session: orm.Session) -> None:
            c.session = session
            idiom(c)
            if fail:
                raise RuntimeError("fails after the idiom")
        return body

    with c.app.app_context():
        try:
            seedguard.apply(seeds=[seedguard.SeedUnit("idiom", unit_body(True))],
                            scoped_sessions=[c.scoped])
        except seedguard.SeedFailed as err:
            message = str(err)
        if c.rows() or c.ledger():
            return f"BROKEN: failing unit left {c.rows()} rows, {c.ledger()} ledger rows"
        if "fails after the idiom" not in message:
            return "refused: " + next(
                (why for words, why in REASONS if words in message), message[:60])
        try:
            seedguard.apply(seeds=[seedguard.SeedUnit("idiom", unit_body(False))],
                            scoped_sessions=[c.scoped])
        except seedguard.SeedFailed as err:
            return f"BROKEN: the fixed unit failed: {str(err)[:70]}"
        if (c.rows(), c.ledger()) != (1, 1):
            return f"BROKEN: applied unit left {c.rows()} rows, {c.ledger()} ledger rows"
    return "atomic"


@contextmanager
def database(kind: str, tmp: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/idioms-{uuid.uuid4().hex[:8]}.db"
        return
    name = f"sg_idioms_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.make_url(SERVERS[kind]).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb")
    kinds = parser.parse_args().databases.split(",")
    table: dict[str, dict[str, str]] = {name: {} for name in IDIOMS}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            with database(kind, tmp) as url:
                context = Context(url)
                for name, idiom in IDIOMS.items():
                    table[name][kind] = cell(context, idiom)
                context.engine.dispose()
    print("| idiom | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row[kind] for kind in kinds) + " |")


if __name__ == "__main__":
    main()
