"""Where to register ``SeedGuard`` in an app factory, tried on a flaskbb-like one on each
database: factory code that reads seeded rows (a plugin registry loaded from the
database) sees them on the first start only when the extension comes before it.

The factory is imported in a fresh process per start, as a server would: the seeds
package is imported by the extension (``seeds="..."``), not by the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from _support import TestDatabase, child_env, write_module

SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("plugins")
def plugins(session):
    for name in ("portal", "conversations"):
        session.execute(sa.text("INSERT INTO plugin_registry (name, enabled) VALUES (:n, 1)"),
                        {"n": name})
'''

FACTORY = '''
import json, os
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from seedguard.flask import SeedGuard

db = SQLAlchemy()
guard = SeedGuard()


def load_plugins(app):
    # flaskbb's plugin manager: the enabled plugins come from the database.
    rows = db.session.execute(sa.text("SELECT name FROM plugin_registry WHERE enabled = 1"))
    app.config["PLUGINS"] = sorted(row[0] for row in rows)


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    if os.environ["REGISTER"] == "first":
        # Right after the database (and Migrate): what follows sees the seeded rows.
        guard.init_app(app, apply_on_start=True)
    with app.app_context():
        load_plugins(app)
    if os.environ["REGISTER"] == "last":
        guard.init_app(app, apply_on_start=True)
    return app


app = create_app()
print(json.dumps(app.config["PLUGINS"]))
'''


def start(folder: Path, db: TestDatabase, register: str) -> list[str]:
    """One server start: a fresh process creating the app; the plugins its factory saw."""
    env = child_env(folder)
    env.update(DATABASE_URL=db.url, REGISTER=register)
    env.pop("SEEDGUARD_SEEDS", None)
    done = subprocess.run([sys.executable, "-c", "import factory_app"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    plugins: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return plugins


@pytest.mark.parametrize("register", ["first", "last"])
def test_registering_before_the_factory_reads_seeded_data(
        db: TestDatabase, tmp_path: Path, register: str) -> None:
    db.execute("CREATE TABLE plugin_registry (name VARCHAR(50) PRIMARY KEY, enabled INTEGER)")
    seeds = f"bb_seeds_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, seeds, SEEDS)
    (tmp_path / "factory_app.py").write_text(
        textwrap.dedent(FACTORY).replace("SeedGuard()", f"SeedGuard(seeds={seeds!r})"))

    first_boot = start(tmp_path, db, register)
    if register == "first":
        assert first_boot == ["conversations", "portal"]
    else:  # the reported trap: seeded after the factory read, so the first start saw nothing
        assert first_boot == []
    # Either way the rows are there once, and the next start sees them.
    assert start(tmp_path, db, register) == ["conversations", "portal"]
    assert db.ledger() == [("plugins", 1)]
    assert sorted(row[0] for row in db.execute("SELECT name FROM plugin_registry")) == [
        "conversations", "portal"]
