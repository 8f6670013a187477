"""Lock waits are bounded by lock_timeout alone, whatever the server's own statement limits.

A database (or role, or session) with a ``statement_timeout`` /
``max_statement_time`` shorter than the wait must not cut the wait short;
a wait the server does cancel ends in LockTimeout naming the holder and the
time really waited. ``lock_timeout`` may be any finite number of seconds or
``inf`` (no limit) on every database.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, apply_module, run_processes, unit, write_module

import seedguard
from seedguard import LockTimeout
from seedguard.locks import DatabaseLock, Deadline, FileLock, database_lock, lock_key

HOLD_SECONDS = 3.0


@pytest.fixture
def held(server_db: TestDatabase) -> Iterator[tuple[TestDatabase, DatabaseLock]]:
    """The ledger's database lock, held by this test's own session (as another host would)."""
    server_db.create_effects_table()
    seedguard.apply(server_db.url, seeds=[])  # the ledger exists: the waiter only waits
    engine = server_db.engine(poolclass=sa.pool.NullPool)
    lock = database_lock(engine, lock_key(engine, "seedguard_ledger", None))
    lock.acquire(Deadline(10))
    try:
        yield server_db, lock
    finally:
        lock.release()


def _release_later(lock: DatabaseLock, seconds: float) -> threading.Thread:
    timer = threading.Timer(seconds, lock.release)
    timer.start()
    return timer


def _short_statement_limit(db: TestDatabase) -> sa.Engine:
    """An engine whose sessions may run no statement for more than 1 s."""
    if db.kind == "postgresql":
        name = sa.engine.make_url(db.url).database
        db.execute(f"ALTER DATABASE {name} SET statement_timeout = '1s'")
        return db.engine()
    # MariaDB's per-session limit, in seconds, as a per-user MAX_STATEMENT_TIME sets it.
    return db.engine(connect_args={"init_command": "SET SESSION max_statement_time = 1"})


@pytest.mark.parametrize("lock_timeout", [30, math.inf])
def test_a_server_statement_limit_does_not_cut_the_wait_short(
        held: tuple[TestDatabase, DatabaseLock], lock_timeout: float) -> None:
    db, lock = held
    engine = _short_statement_limit(db)
    timer = _release_later(lock, HOLD_SECONDS)
    try:
        result = seedguard.apply(engine, seeds=[unit("roles")], lock_timeout=lock_timeout,
                                 lock_path=db.tmp_path / "own.lock")
    finally:
        timer.cancel()
        timer.join(timeout=10)
    assert [u.name for u in result.applied] == ["roles"]
    assert db.effects() == ["roles"]
    with engine.connect() as conn:  # the application's limit is back on its pooled session
        setting = "SHOW statement_timeout" if db.kind == "postgresql" else \
            "SELECT @@session.max_statement_time"
        assert str(conn.execute(sa.text(setting)).scalar()) in ("1s", "1.0", "1.000000")


def test_a_cancelled_wait_is_a_lock_timeout_with_the_real_time(
        held: tuple[TestDatabase, DatabaseLock]) -> None:
    db, _ = held
    if db.kind != "postgresql":
        pytest.skip("cancelling another session's statement: pg_cancel_backend")

    def cancel_waiter() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = db.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND datname = current_database() AND query LIKE "
                              "'%pg_advisory_lock%'")
            if rows:
                db.execute("SELECT pg_cancel_backend(:p)", p=rows[0][0])
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_waiter)
    canceller.start()
    try:
        with pytest.raises(LockTimeout) as info:
            seedguard.apply(db.url, seeds=[unit("roles")], lock_timeout=30,
                            lock_path=db.tmp_path / "own.lock")
    finally:
        canceller.join(timeout=30)
    message = str(info.value)
    assert "after 30" not in message  # the wait it claims is the wait it had
    assert "seedguard pid=" in message  # the holder, by its application_name
    assert db.effects() == []


@pytest.mark.parametrize("lock_timeout", [math.inf, 1e7, 0.001, 3e9])
def test_any_lock_timeout_works_on_every_database(db: TestDatabase, lock_timeout: float) -> None:
    db.create_effects_table()
    result = seedguard.apply(db.url, seeds=[unit("roles")], lock_timeout=lock_timeout)
    assert [u.name for u in result.applied] == ["roles"]
    assert db.effects() == ["roles"]


def test_a_waiter_with_no_limit_waits_for_the_holder(
        held: tuple[TestDatabase, DatabaseLock]) -> None:
    db, lock = held
    timer = _release_later(lock, 1.0)
    results: list[Any] = []
    try:
        results.append(seedguard.apply(db.url, seeds=[unit("roles")], lock_timeout=math.inf,
                                       lock_path=db.tmp_path / "own.lock"))
    finally:
        timer.cancel()
        timer.join(timeout=10)
    assert [u.name for u in results[0].applied] == ["roles"]


HANDOVER_SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit) VALUES ('roles')"))
'''


@pytest.mark.parametrize("holder_does", ["the work", "nothing"])
def test_waiters_for_the_file_lock_look_again_and_apply_at_most_once(
        db: TestDatabase, tmp_path: Path, holder_does: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Waiters for the file lock look at the ledger as soon as the holder lets
    # go, without holding the lock; whoever still finds the unit pending takes
    # the locks again, so the unit runs exactly once either way.
    db.create_effects_table()
    seedguard.apply(db.url, seeds=[])  # the ledger exists: the waiters only wait
    write_module(tmp_path, "handover_seeds", HANDOVER_SEEDS)
    lock_path = tmp_path / "seeds.lock"
    monkeypatch.setenv("SEEDGUARD_LOCK_PATH", str(lock_path))  # the waiters' lock
    holder = FileLock(lock_path)
    holder.acquire(Deadline(5))

    def hand_over() -> None:
        if holder_does == "the work":
            # Under another lock path: the waiters hold no database lock while
            # they wait for the file lock.
            seedguard.apply(db.url, seeds=[unit("roles")], lock_path=tmp_path / "other.lock")
        holder.release()

    timer = threading.Timer(HOLD_SECONDS, hand_over)
    timer.start()
    try:
        outcomes = run_processes(4, apply_module, db.url, "handover_seeds", paths=[tmp_path])
    finally:
        timer.join()
        holder.release()
    assert [status for status, _ in outcomes] == ["ok"] * 4, outcomes
    applied = [names for _, names in outcomes if names]
    assert applied == ([] if holder_does == "the work" else [["roles"]])
    assert db.effects() == ["roles"]
