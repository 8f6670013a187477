"""The suite every database lock must pass, for each registered class on its database.

Parametrised over ``DATABASE_LOCKS`` and ``TRANSACTION_LOCKS`` (see
:mod:`backends.cases`): a lock class registered for a dialect runs all of it.
Appliers on server databases each take a lock file of their own, as on hosts
of their own, so the database lock alone must serialise them; SQLite's lock
is the file lock beside the database, shared by every applier of the file.

The contracts: one applier at a time, a second one waits for the holder and
then applies, a timeout names the holder, a killed holder releases at once,
a lost lock session is noticed before the next unit, and a released session
goes back to the application's pool as the application had it, or not at all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env, run_each, seeds_source, unit, write_module

import seedguard
from seedguard import LockTimeout, SeedguardError
from seedguard.locks import (
    DATABASE_LOCKS,
    TRANSACTION_LOCKS,
    DatabaseLock,
    Deadline,
    database_lock,
    lock_key,
)

from .cases import Case, cases, database

LOCK_CASES = [*cases(DATABASE_LOCKS), *cases(TRANSACTION_LOCKS, "transaction")]
UNITS = ["roles", "users", "plans", "settings"]


@pytest.fixture(params=LOCK_CASES, ids=[case.id for case in LOCK_CASES])
def lock_case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def locked_db(lock_case: Case, tmp_path: Path) -> Iterator[TestDatabase]:
    """A fresh database of the case's kind, with the effects table and a ledger."""
    for db in database(lock_case, tmp_path):
        db.create_effects_table()
        seedguard.apply(db.url, seeds=[])  # the ledger exists: appliers only wait
        yield db


def _lock_path(case: Case, tmp_path: Path, host: str) -> str | None:
    """Each host's own lock file on a server database; SQLite's shared one beside it."""
    return None if case.kind == "sqlite" else str(tmp_path / f"{host}.lock")


def _options(case: Case, tmp_path: Path, host: str) -> dict[str, Any]:
    return {"lock_path": _lock_path(case, tmp_path, host), "lock_mode": case.mode}


def test_the_registered_class_is_the_one_used(lock_case: Case,
                                              locked_db: TestDatabase) -> None:
    engine = locked_db.engine()
    lock = database_lock(engine, lock_key(engine, "seedguard_ledger", None), lock_case.mode)
    assert type(lock) is lock_case.cls


def apply_as_host(url: str, module: str, lock_path: str | None, mode: str) -> list[str]:
    """Child: one host's applier."""
    result = seedguard.apply(url, seeds=module, lock_path=lock_path,
                             lock_mode=mode, lock_timeout=120)  # type: ignore[arg-type]
    return [item.name for item in result.applied]


def test_one_applier_at_a_time_each_unit_exactly_once(lock_case: Case, locked_db: TestDatabase,
                                                      tmp_path: Path) -> None:
    module = f"seeds_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, seeds_source(UNITS, sleep=0.05))
    calls = [(locked_db.url, module, _lock_path(lock_case, tmp_path, f"host{i}"), lock_case.mode)
             for i in range(8)]
    outcomes = run_each(apply_as_host, calls, paths=[tmp_path], timeout=300)
    assert [detail for status, detail in outcomes if status != "ok"] == []
    assert sorted(name for _, names in outcomes for name in names) == sorted(UNITS)
    assert sorted(locked_db.effects()) == sorted(UNITS)
    assert locked_db.ledger() == sorted((name, 1) for name in UNITS)


HOLDER = """
import sys, time, pathlib
import sqlalchemy as sa
import seedguard

url, started, lock_path, mode, hold = (sys.argv[1], pathlib.Path(sys.argv[2]),
                                       sys.argv[3] or None, sys.argv[4], float(sys.argv[5]))

def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'holder')"))
    session.flush()
    started.write_text("holding")
    time.sleep(hold)

unit = seedguard.SeedUnit(name="slow", fn=slow, origin="suite:slow", identity="suite:slow")
seedguard.apply(url, seeds=[unit], lock_path=lock_path, lock_mode=mode)
"""


def _start_holder(case: Case, db: TestDatabase, tmp_path: Path,
                  hold: float) -> subprocess.Popen[bytes]:
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    started = tmp_path / "started"
    errors = tmp_path / "holder.err"
    with errors.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(script), db.url, str(started),
             _lock_path(case, tmp_path, "holder") or "", case.mode, str(hold)],
            cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL, stderr=err_file)
    deadline = time.monotonic() + 60
    while not started.exists():
        if proc.poll() is not None:
            raise AssertionError(f"holder exited early: {errors.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("holder never reached its unit")
        time.sleep(0.02)
    return proc


def _slow_unit() -> seedguard.SeedUnit:
    def slow(session: Any) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'waiter')"))

    return seedguard.SeedUnit(name="slow", fn=slow, origin="suite:slow", identity="suite:slow")


def test_a_second_applier_waits_for_the_holder_then_applies(
        lock_case: Case, locked_db: TestDatabase, tmp_path: Path) -> None:
    proc = _start_holder(lock_case, locked_db, tmp_path, hold=2.0)
    try:
        began = time.monotonic()
        result = seedguard.apply(locked_db.url, seeds=[_slow_unit(), unit("after")],
                                 lock_timeout=60, **_options(lock_case, tmp_path, "waiter"))
        waited = time.monotonic() - began
    finally:
        assert proc.wait(timeout=60) == 0
    assert [u.name for u in result.applied] == ["after"]  # "slow" is the holder's
    assert waited > 1.0, waited
    assert locked_db.ledger() == [("after", 1), ("slow", 1)]
    assert locked_db.effects("slow") == ["holder"]


def test_a_timeout_names_the_holder(lock_case: Case, locked_db: TestDatabase,
                                    tmp_path: Path) -> None:
    proc = _start_holder(lock_case, locked_db, tmp_path, hold=60)
    try:
        began = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            seedguard.apply(locked_db.url, seeds=[_slow_unit()], lock_timeout=0.5,
                            **_options(lock_case, tmp_path, "waiter"))
        took = time.monotonic() - began
    finally:
        proc.kill()
        proc.wait(timeout=30)
    message = str(info.value)
    assert took < 10, took
    assert isinstance(info.value, TimeoutError)
    assert "lock_timeout" in message and "held by" in message
    assert "an unknown holder" not in message, message
    assert info.value.holder and info.value.holder in message
    if lock_case.kind == "sqlite" or (lock_case.kind, lock_case.mode) == ("postgresql", "session"):
        # The file lock's holder record, the lock session's application_name.
        assert f"pid {proc.pid}" in message or f"pid={proc.pid}" in message, message
    assert locked_db.effects("slow") == []


def test_a_killed_holder_releases_at_once_and_leaves_no_half_unit(
        lock_case: Case, locked_db: TestDatabase, tmp_path: Path) -> None:
    proc = _start_holder(lock_case, locked_db, tmp_path, hold=60)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    began = time.monotonic()
    result = seedguard.apply(locked_db.url, seeds=[_slow_unit()], lock_timeout=5,
                             **_options(lock_case, tmp_path, "next"))
    took = time.monotonic() - began
    assert took < 5, took
    assert [u.name for u in result.applied] == ["slow"]
    assert locked_db.effects("slow") == ["waiter"]  # the killed unit's write is gone
    assert locked_db.ledger() == [("slow", 1)]


def _session_lock(case: Case, engine: sa.Engine) -> DatabaseLock:
    """The case's lock, taken; skips for a lock that holds no session of its own."""
    lock = database_lock(engine, lock_key(engine, "seedguard_ledger", None), case.mode)
    lock.acquire(Deadline(10))
    if lock.conn is None:
        lock.release()
        pytest.skip(f"{case.id}: no lock session between units (nothing to lose or pool)")
    return lock


def test_a_lost_lock_session_is_noticed_before_the_next_unit(
        lock_case: Case, locked_db: TestDatabase) -> None:
    engine = locked_db.engine()
    lock = _session_lock(lock_case, engine)
    try:
        assert lock.conn is not None
        session = lock.session_id(lock.conn)
        lock.conn.commit()
        lock.verify()  # held
        with engine.connect() as admin:
            lock.end_session(admin, session)
            admin.commit()
        with pytest.raises(SeedguardError, match="lost the database lock"):
            lock.verify()
    finally:
        lock.release()
    # Released with its session: the next applier takes it at once.
    again = _session_lock(lock_case, engine)
    again.release()


# What an application may have set on its sessions, that the lock changes while held.
APP_SETTINGS = {
    "postgresql": ({"options": "-c statement_timeout=50000 -c lock_timeout=40000 "
                               "-c idle_session_timeout=600000 "
                               "-c idle_in_transaction_session_timeout=300000 "
                               "-c tcp_keepalives_idle=77 -c application_name=app"},
                   "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                   "current_setting('idle_session_timeout'), "
                   "current_setting('idle_in_transaction_session_timeout'), "
                   "current_setting('tcp_keepalives_idle'), current_setting('application_name'), "
                   "pg_backend_pid()"),
    "mariadb": ({"init_command": "SET SESSION wait_timeout = 600, max_statement_time = 50"},
                "SELECT @@session.wait_timeout, @@session.max_statement_time, CONNECTION_ID()"),
}
UNLOCK_ALL = {"postgresql": "SELECT pg_advisory_unlock_all()",
              "mariadb": "SELECT RELEASE_ALL_LOCKS()"}


@pytest.mark.parametrize("lost", [False, True], ids=["confirmed", "lost"])
def test_a_released_session_goes_back_to_the_pool_as_the_app_had_it_or_not_at_all(
        lock_case: Case, locked_db: TestDatabase, lost: bool) -> None:
    """An unlock the server does not confirm ends the session instead of pooling it."""
    assert lock_case.kind is not None
    connect_args, state = APP_SETTINGS.get(lock_case.kind, ({}, ""))
    engine = locked_db.engine(pool_size=1, max_overflow=0, connect_args=connect_args)
    lock = _session_lock(lock_case, engine)  # on the pool's one connection
    assert lock.conn is not None
    held = lock.session_id(lock.conn)
    lock.conn.commit()
    if lost:  # e.g. a unit that ran DISCARD ALL or RELEASE_ALL_LOCKS() on the lock's session
        lock.conn.execute(sa.text(UNLOCK_ALL[lock_case.kind]))
    lock.release()
    with engine.connect() as conn:
        after = tuple(conn.execute(sa.text(state)).one())
    fresh = sa.create_engine(locked_db.url, connect_args=connect_args,
                             poolclass=sa.pool.NullPool)
    try:
        with fresh.connect() as conn:
            expected = tuple(conn.execute(sa.text(state)).one())
    finally:
        fresh.dispose()
    assert after[:-1] == expected[:-1]  # the application's own settings, none of seedguard's
    assert (after[-1] == held) is not lost  # pooled only when the unlock was confirmed
