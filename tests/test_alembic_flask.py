"""Flask-Migrate: `flask seedguard upgrade --schema` applies the app's migrations and seeds.

A real Flask app in tmp (Flask-SQLAlchemy models, Flask-Migrate, SeedGuard),
its migrations folder made by the real ``flask db init``, driven by real
``flask`` processes on each database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from _support import TestDatabase, child_env, write_module

F1, F2 = "f1a5c0000001", "f1a5c0000002"

APP = '''
import seedguard.alembic
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = {url!r}
db = SQLAlchemy(app)


class Widget(db.Model):
    __tablename__ = "widgets"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)


class Gadget(db.Model):
    __tablename__ = "gadgets"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), nullable=False)


# The one-line change for autogenerate: Flask-Migrate passes extra keyword
# arguments on to alembic's context.configure().
Migrate(app, db, include_object=seedguard.alembic.include_object)
SeedGuard(app, db, seeds="flask_seeds")
'''

SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("gadgets", requires_revision={f2!r})
def gadgets(session):
    session.execute(sa.text("INSERT INTO gadgets (name) VALUES ('g')"))
'''

REVISION = '''
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
    op.create_table({name!r}, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False))


def downgrade():
    op.drop_table({name!r})
'''


def flask(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "flaskapp", *args],
                          cwd=cwd, env=child_env(cwd), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_flask_seedguard_upgrade_schema_applies_migrations_and_seeds(db: TestDatabase) -> None:
    cwd = db.tmp_path
    write_module(cwd, "flaskapp", APP.format(url=db.url))
    write_module(cwd, "flask_seeds", SEEDS.format(f2=F2))
    init = flask(cwd, "db", "init")
    assert init.returncode == 0, init.stderr
    versions = cwd / "migrations" / "versions"
    (versions / f"{F1}_widgets.py").write_text(
        textwrap.dedent(REVISION.format(name="widgets", rev=F1, down=None)))
    (versions / f"{F2}_gadgets.py").write_text(
        textwrap.dedent(REVISION.format(name="gadgets", rev=F2, down=F1)))

    waiting = flask(cwd, "seedguard", "upgrade", "--json")
    assert waiting.returncode == 0, waiting.stderr
    assert json.loads(waiting.stdout)["waiting"] == [
        {"name": "gadgets", "version": 1, "revision": F2, "via": None}]

    first = flask(cwd, "seedguard", "upgrade", "--schema", "--json")
    second = flask(cwd, "seedguard", "upgrade", "--schema", "--json")

    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["migrated"] == [F1, F2]
    assert [item["name"] for item in document["applied"]] == ["gadgets"]
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["migrated"] == []
    assert json.loads(second.stdout)["applied"] == []
    assert db.execute("SELECT version_num FROM alembic_version")[0][0] == F2
    assert [row[0] for row in db.execute("SELECT name FROM gadgets")] == ["g"]
    assert db.ledger() == [("gadgets", 1)]

    # Autogenerate with the one-line change sees no difference: the ledger and
    # its version table are seedguard's, not the app's models'.
    migrate = flask(cwd, "db", "migrate", "-m", "nothing")
    assert migrate.returncode == 0, migrate.stderr
    assert "No changes in schema detected" in migrate.stdout + migrate.stderr
    assert sorted(p.name for p in versions.glob("*.py")) == [
        f"{F1}_widgets.py", f"{F2}_gadgets.py"]
