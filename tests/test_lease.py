"""The lease: a database lock whose holder vanished is taken over, a healthy one never is.

The real network cut is in ``test_lease_takeover.py`` (slow: private servers in
network namespaces). Here a frozen holder (SIGSTOP) stands in for a vanished
host: its kernel still answers TCP, so only the heartbeat can tell (what
MySQL/MariaDB depend on, and what PostgreSQL's keepalives cannot see).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env
from click.testing import CliRunner

import seedguard
import seedguard.api
from seedguard import ConfigError
from seedguard.cli import cli
from seedguard.config import resolve
from seedguard.locks import DatabaseLock, Deadline, database_lock, lock_key

LEASE = 5.0


# -- the setting ---------------------------------------------------------------------


def test_lease_defaults_to_30_seconds(tmp_path: Path) -> None:
    assert resolve("sqlite://", cwd=tmp_path).lease == 30.0


@pytest.mark.parametrize("lease", [0, 4.9, -1, float("inf"), float("nan"), True, "soon"])
def test_a_lease_outside_its_range_is_a_config_error_saying_why(
        tmp_path: Path, lease: object) -> None:
    with pytest.raises(ConfigError, match="lease") as info:
        resolve("sqlite://", lease=lease, cwd=tmp_path)  # type: ignore[arg-type]
    if lease in (0, 4.9, -1):
        assert "would end healthy holders" in str(info.value)


def test_a_lease_longer_than_the_lock_timeout_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lease = 60 s .*longer than lock_timeout = 30 s"
                       r".*give up before it could take over"):
        resolve("sqlite://", lease=60, lock_timeout=30, cwd=tmp_path)
    # The default lease is no promise: a short lock_timeout alone stays valid.
    assert resolve("sqlite://", lock_timeout=1, cwd=tmp_path).lease == 30.0
    assert resolve("sqlite://", lease=60, cwd=tmp_path).lease == 60.0


def test_the_lease_comes_from_the_environment_and_pyproject(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.seedguard]\nlease = 12\n")
    assert resolve("sqlite://", cwd=tmp_path).lease == 12.0
    monkeypatch.setenv("SEEDGUARD_LEASE", "7.5")
    assert resolve("sqlite://", cwd=tmp_path).lease == 7.5
    assert resolve("sqlite://", lease=9, cwd=tmp_path).lease == 9.0
    monkeypatch.setenv("SEEDGUARD_LEASE", "2")
    with pytest.raises(ConfigError, match="SEEDGUARD_LEASE = '2' in the environment"):
        resolve("sqlite://", cwd=tmp_path)


def test_the_cli_takes_lease_and_spells_its_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    result = CliRunner().invoke(cli, ["--url", url, "--seeds", "nothing_here", "upgrade",
                                      "--lease", "60", "--lock-timeout", "10"])
    assert result.exit_code == 2, result.output
    assert "raise --lock-timeout or lower --lease" in result.output


# -- the holder, as status names it ------------------------------------------------


def _held_lock(db: TestDatabase, lease: float = LEASE) -> DatabaseLock:
    seedguard.apply(db.url, seeds=[])  # the ledger (and its holder table) exists
    engine = db.engine(poolclass=sa.pool.NullPool)
    lock = database_lock(engine, lock_key(engine, "seedguard_ledger", None), lease=lease)
    lock.acquire(Deadline(10))
    return lock


def _holder_when_written(db: TestDatabase, timeout: float = 10) -> dict[str, object] | None:
    end = time.monotonic() + timeout
    while True:
        holder = seedguard.api.status(db.url, seeds=[]).holder
        if holder is not None or time.monotonic() > end:
            return holder
        time.sleep(0.1)


def test_status_names_the_holder_and_its_heartbeat(server_db: TestDatabase) -> None:
    lock = _held_lock(server_db)
    try:
        holder = _holder_when_written(server_db)
        assert holder is not None
        assert holder["host"] == socket.gethostname()
        assert holder["pid"] == os.getpid()
        assert holder["since"] is not None and holder["heartbeat"] is not None
        assert str(holder["heartbeat"]).endswith("+00:00")
        # Renewed while held (five times per lease).
        first = holder["heartbeat"]
        time.sleep(LEASE / 5 + 1.5)
        later = seedguard.api.status(server_db.url, seeds=[]).holder
        assert later is not None and str(later["heartbeat"]) > str(first)
        document = seedguard.api.status(server_db.url, seeds=[]).as_dict()
        assert set(document["holder"]) == {"host", "pid", "since", "heartbeat"}
    finally:
        lock.release()
    assert seedguard.api.status(server_db.url, seeds=[]).holder is None
    assert seedguard.api.status(server_db.url, seeds=[]).as_dict()["holder"] is None


def test_status_json_holder_is_null_when_free(db: TestDatabase,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seedguard.apply(db.url, seeds=[])
    (db.tmp_path / "no_units.py").write_text("")
    monkeypatch.chdir(db.tmp_path)
    result = CliRunner().invoke(cli, ["--url", db.url, "--seeds", "no_units", "status",
                                      "--json"])
    assert json.loads(result.output)["holder"] is None, result.output


def test_postgresql_bounds_the_lock_session_with_keepalives(pg: TestDatabase) -> None:
    lock = _held_lock(pg, lease=30)
    try:
        assert lock.conn is not None
        shown = {name: lock.conn.execute(sa.text(f"SHOW {name}")).scalar() for name in (
            "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
            "client_connection_check_interval")}
        lock.conn.commit()
        assert shown == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
                         "tcp_keepalives_count": "3",
                         "client_connection_check_interval": "5s"}
    finally:
        lock.release()


# -- a frozen holder is taken over; a slow one is not -------------------------------

HOLDER = """
import os, sys, time
import sqlalchemy as sa
import seedguard
import seedguard.api

marker, url, lease, work = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'holder')"))
    open(marker, "w").close()
    if work == "sql":
        sleep = "SELECT pg_sleep(2.5 * :s)" if session.bind.dialect.name == "postgresql" \\
            else "SELECT SLEEP(2.5 * :s)"
        session.execute(sa.text(sleep), {"s": lease})
    else:
        time.sleep(2 * lease)

unit = seedguard.SeedUnit(name="slow", fn=slow, origin="holder:slow", identity="holder:slow")
try:
    seedguard.apply(url, seeds=[unit], lease=lease, lock_path=marker + ".lock")
except seedguard.SeedguardError as err:
    print(f"holder: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(1)
print("holder: applied")
"""


def _start_holder(db: TestDatabase, tmp_path: Path,
                  work: str) -> tuple[subprocess.Popen[str], Path]:
    db.create_effects_table()
    seedguard.apply(db.url, seeds=[])
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(script), str(marker), db.url, str(LEASE), work],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    end = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the holder did not start its unit: {out}{err}")
        time.sleep(0.05)
    return proc, marker


def _waiter_unit() -> seedguard.SeedUnit:
    def slow(session: sa.orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'waiter')"))

    return seedguard.SeedUnit(name="slow", fn=slow, origin="holder:slow",
                              identity="holder:slow")


def test_a_frozen_holder_is_taken_over_after_its_lease(server_db: TestDatabase,
                                                      tmp_path: Path) -> None:
    proc, _ = _start_holder(server_db, tmp_path, "python")
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        result = seedguard.apply(server_db.url, seeds=[_waiter_unit()], lock_timeout=60,
                                 lease=LEASE, lock_path=tmp_path / "waiter.lock")
        took = time.monotonic() - stopped
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    assert [u.name for u in result.applied] == ["slow"]
    # The lease plus a stretch of the wait and one renewal interval, and slack
    # for a shared machine.
    assert took < LEASE * 1.4 + 5, took
    # The holder resumed without its session: its unit was never recorded.
    assert proc.returncode == 1, out + err
    assert "lost" in err.lower() or "lease" in err.lower(), err
    assert server_db.ledger() == [("slow", 1)]
    assert server_db.effects("slow") == ["waiter"]


def test_a_healthy_slow_holder_keeps_its_lease(server_db: TestDatabase,
                                              tmp_path: Path) -> None:
    """One statement 2.5 leases long, a waiter with the same lease beside it."""
    proc, _ = _start_holder(server_db, tmp_path, "sql")
    try:
        result = seedguard.apply(server_db.url, seeds=[_waiter_unit()], lock_timeout=60,
                                 lease=LEASE, lock_path=tmp_path / "waiter.lock")
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert result.applied == []
    assert server_db.ledger() == [("slow", 1)]
    assert server_db.effects("slow") == ["holder"]
