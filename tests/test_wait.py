"""seedguard.wait() / `seedguard wait`: a readiness gate that returns within a second of
the applier's commit, times out with exit 4, and never applies anything."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _support import TestDatabase, child_env, write_module

import seedguard
from seedguard import readiness

SEEDS = """
import os, time
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))

@seedguard.seed("admin", after=["roles"])
def admin(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('admin', 'x')"))
    # Long enough that the waiter is surely looking before the commit.
    time.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
"""

# The applier prints the wall-clock time right after apply() returned: its
# last unit committed just before.
APPLIER = ("import sys, time, seedguard\n"
           "seedguard.apply(sys.argv[1], seeds=sys.argv[2])\n"
           "print(repr(time.time()))\n")


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The seeds module, under a name of this test's own (sys.modules outlives a test)."""
    name = f"wait_seeds_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, name, SEEDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _applier(db: TestDatabase, tmp_path: Path, seeds: str, hold: float
             ) -> subprocess.Popen[str]:
    env = child_env(tmp_path)
    env["HOLD_SECONDS"] = str(hold)
    return subprocess.Popen([sys.executable, "-c", APPLIER, db.url, seeds], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_beside_an_applier(db: TestDatabase, tmp_path: Path, seeds: str
                            ) -> tuple[float, float]:
    """Start an applier in another process, wait for it here; (returned, committed) times."""
    child = _applier(db, tmp_path, seeds, hold=3.0)
    try:
        result = seedguard.wait(db.url, seeds=seeds, timeout=120)
        returned = time.time()
        # What wait() saw is what is there: the applier's work, committed.
        assert sorted(db.effects()) == ["admin", "roles"]
    finally:
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    committed = float(out.strip().splitlines()[-1])
    assert [u.name for u in result.skipped] == ["roles", "admin"]
    assert result.applied == [] and result.pending == []
    return returned, committed


def test_wait_returns_within_a_second_of_the_appliers_commit(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_effects_table()
    seeds = _module(tmp_path, monkeypatch)
    returned, committed = _wait_beside_an_applier(db, tmp_path, seeds)
    assert returned - committed < 1.0, f"returned {returned - committed:.2f} s after the commit"


def test_on_postgresql_the_appliers_notify_wakes_the_waiter(
        pg: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the fallback poll pushed far out, only the NOTIFY sent in the
    # unit's transaction can bring the waiter back within a second.
    monkeypatch.setattr(readiness, "LISTEN_POLL_CAP_SECONDS", 60.0)
    monkeypatch.setattr(readiness, "FIRST_POLL_SECONDS", 60.0)
    pg.create_effects_table()
    seeds = _module(tmp_path, monkeypatch)
    returned, committed = _wait_beside_an_applier(pg, tmp_path, seeds)
    assert returned - committed < 1.0, f"returned {returned - committed:.2f} s after the commit"


def test_wait_times_out_with_exit_4_and_never_applies(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_effects_table()
    seeds = _module(tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(seedguard.WaitTimeout) as caught:
        seedguard.wait(db.url, seeds=seeds, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.pending == ["roles", "admin"]
    assert "seedguard upgrade" in str(caught.value)
    cli = subprocess.run([sys.executable, "-m", "seedguard", "--url", db.url, "--seeds",
                          seeds, "wait", "--timeout", "0.5"],
                         env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 4, cli.stderr
    assert "timed out" in cli.stderr and "roles, admin" in cli.stderr
    # Nothing applied, not even the ledger created.
    assert db.effects() == [] and db.ledger() == []
    assert "seedguard_ledger" not in db.tables()


def test_wait_waits_for_what_is_left_and_exits_0_once_ready(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_effects_table()
    seeds = _module(tmp_path, monkeypatch)
    seedguard.apply(db.url, seeds=seeds, target="roles")
    with pytest.raises(seedguard.WaitTimeout) as caught:
        seedguard.wait(db.url, seeds=seeds, timeout=0.2)
    assert caught.value.pending == ["admin"]
    seedguard.apply(db.url, seeds=seeds)
    cli = subprocess.run([sys.executable, "-m", "seedguard", "--url", db.url, "--seeds",
                          seeds, "wait", "--timeout", "5"],
                         env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "ready: 2 unit(s) applied" in cli.stdout
    assert sorted(db.effects()) == ["admin", "roles"]  # each once: wait ran nothing


def test_a_negative_timeout_is_a_config_error(db: TestDatabase) -> None:
    with pytest.raises(seedguard.ConfigError, match="timeout"):
        seedguard.wait(db.url, seeds=[], timeout=-1)
