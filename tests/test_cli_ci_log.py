"""Progress in a CI log: ``seedguard upgrade`` in a real process whose stdout and stderr
are one pipe, as a CI job's log is, while log records (alembic's INFO lines, the app's)
go to stderr during a unit: every line stays whole and in order; on each database."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from _support import TestDatabase, child_env, write_module

SEEDS = '''
import logging, sys
import sqlalchemy as sa
import seedguard

# What alembic's env.py (fileConfig) sets up: INFO records to stderr.
logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="INFO  [%(name)s] %(message)s")
log = logging.getLogger("myapp.seeding")

@seedguard.seed("roles")
def roles(session):
    log.info("Context impl for roles.")
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))

@seedguard.seed("users", after=["roles"])
def users(session):
    log.info("Will assume transactional DDL.")
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('users', 'x')"))
'''


def test_progress_lines_stay_whole_among_log_lines(db: TestDatabase, tmp_path: Path) -> None:
    db.create_effects_table()
    name = f"ci_seeds_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, name, SEEDS)
    done = subprocess.run(
        [sys.executable, "-m", "seedguard", "--url", db.url, "--seeds", name, "upgrade"],
        cwd=tmp_path, env=child_env(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout
    # seedguard's own migrations of its ledger log through alembic too: set aside.
    # Each progress line is a line of its own: the unit's log lines come between
    # "applying" and "done", never inside either.
    lines = [line for line in done.stdout.splitlines()
             if line.startswith(("applying", "applied", "INFO  [myapp", "error", "roles v1",
                                 "users v1"))]
    shape = [line.split(": done ")[0] + ": done" if ": done " in line else line
             for line in lines]
    assert shape == [
        "applying roles v1 ...",
        "INFO  [myapp.seeding] Context impl for roles.",
        "roles v1: done",
        "applying users v1 ...",
        "INFO  [myapp.seeding] Will assume transactional DDL.",
        "users v1: done",
        lines[-1],
    ], done.stdout
    assert lines[-1].startswith("applied 2 unit(s) in ")
    assert db.effects() == ["roles", "users"]
