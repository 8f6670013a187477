"""SIGKILL fault injection: an applier killed anywhere leaves nothing to repair.

Each trial starts from an empty database (sometimes with a prefix of the
units already applied), forks an applier and kills it with SIGKILL at one of
these points, chosen in turn:

* ``random``: after a random delay, wherever it happens to be;
* ``in-unit``: right after unit *k* wrote its side effect, before its commit;
* ``before-commit``: after unit *k*'s work and ledger row, as COMMIT is sent;
* ``ledger-create``: while creating the ledger table, under both locks;
* ``lock-wait``: while waiting for a lock another applier holds (the file
  lock, or with a lock file of its own the database lock, as from another
  host); the holder is killed inside a unit right after.

After every trial: each unit's side effect is present if and only if its
ledger row is, never twice; then a plain ``apply(lock_timeout=2)`` gets both
locks within 2 seconds and finishes the job, with no manual command.

Trial counts: ``SEEDGUARD_TEST_FULL=1`` (CI) runs 50 per database on SQLite
and PostgreSQL and 20 on MariaDB; the default run does a few of each. The
counts and outcomes are printed (``pytest -s``) per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import random
import re
import select
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, async_url, write_module

import seedguard

FULL = os.environ.get("SEEDGUARD_TEST_FULL") == "1"
TRIALS = {"sqlite": 50, "postgresql": 50, "mariadb": 20} if FULL else \
    {"sqlite": 6, "postgresql": 6, "mariadb": 5}
KILL_POINTS = ("random", "in-unit", "before-commit", "ledger-create", "lock-wait")
UNITS = [f"u{i}" for i in range(6)]
CHILD_WAIT = 20.0  # seconds a child may take to reach its kill point

SEEDS = '''
import time
import sqlalchemy as sa
import seedguard

def _work(name):
    def work(session):
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, 'x')"), {"u": name})
        time.sleep(0.01)
    return work

previous = ()
for _name in %r:
    seedguard.seed(_name, after=previous)(_work(_name))
    previous = (_name,)
'''

# The same units for the async path (apply_async, an async driver): async def
# units on an AsyncSession, each awaiting the loop mid-unit.
ASYNC_SEEDS = '''
import asyncio
import sqlalchemy as sa
import seedguard

def _work(name):
    async def work(session):
        await session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, 'x')"),
                              {"u": name})
        await asyncio.sleep(0.01)
    return work

previous = ()
for _name in %r:
    seedguard.seed(_name, after=previous)(_work(_name))
    previous = (_name,)
'''


def _apply(db: TestDatabase, aio: bool, **options: Any) -> None:
    """``apply()``, or on the async path ``asyncio.run(apply_async())`` with the async driver."""
    if aio:
        asyncio.run(seedguard.apply_async(async_url(db), **options))
    else:
        seedguard.apply(db.url, **options)


# The same chain, each unit also creating a table of its own: DDL inside a
# transactional unit (PostgreSQL and SQLite roll it back with the unit).
DDL_SEEDS = '''
import time
import sqlalchemy as sa
import seedguard

def _work(name):
    def work(session):
        session.execute(sa.text(f"CREATE TABLE t_{name} (id INTEGER PRIMARY KEY)"))
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, 'x')"), {"u": name})
        time.sleep(0.01)
    return work

previous = ()
for _name in %r:
    seedguard.seed(_name, after=previous)(_work(_name))
    previous = (_name,)
'''


# -- the child: fork, arm a hook, apply, signal the parent at the kill point -----------


def _fork_applier(url: str, seeds: str, *, hook: str | None = None, k: int = 0,
                  lock_path: str | None = None, aio: bool = False) -> tuple[int, int]:
    """Fork an applier; returns (pid, read end of a pipe it writes one byte to at ``hook``).

    The child parks (sleeps) at its hook so the parent kills it exactly there.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    # Child: never returns into pytest.
    code = 0
    try:
        os.close(read_fd)
        if aio:
            from sqlalchemy.ext.asyncio import create_async_engine

            async_engine = create_async_engine(url)
            _arm(async_engine.sync_engine, hook, k, write_fd)
            os.write(write_fd, b"s")  # started
            asyncio.run(seedguard.apply_async(async_engine, seeds=seeds, lock_timeout=60,
                                              lock_path=lock_path))
            os._exit(0)
        engine = sa.create_engine(url)
        _arm(engine, hook, k, write_fd)
        os.write(write_fd, b"s")  # started
        seedguard.apply(engine, seeds=seeds, lock_timeout=60, lock_path=lock_path)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _arm(engine: sa.Engine, hook: str | None, k: int, fd: int) -> None:
    def park() -> None:
        os.write(fd, b"k")
        time.sleep(60)

    if hook == "in-unit":
        @sa.event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.startswith("INSERT INTO effects") and _unit_of(params) == UNITS[k]:
                park()
    elif hook == "before-commit":
        seen = {"work": False}

        @sa.event.listens_for(engine, "after_cursor_execute")
        def mark(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.startswith("INSERT INTO effects") and _unit_of(params) == UNITS[k]:
                seen["work"] = True

        @sa.event.listens_for(engine, "commit")
        def commit(conn: Any) -> None:
            if seen["work"]:
                park()
    elif hook == "ledger-create":
        @sa.event.listens_for(engine, "after_cursor_execute")
        def create(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if re.match(r"\s*CREATE TABLE seedguard_ledger\b", statement):
                park()


def _unit_of(params: Any) -> Any:
    if isinstance(params, dict):
        return params.get("u")
    if isinstance(params, (list, tuple)) and params:
        return params[0]
    return None


def _wait_byte(fd: int, wanted: bytes, timeout: float = CHILD_WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        data = os.read(fd, 1)
        if not data:  # the child exited
            return False
        if data == wanted:
            return True
    return False


def _kill(pid: int, fd: int) -> int:
    """SIGKILL and reap ``pid`` (if it is still there); returns its wait status."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return status


# -- the trials -----------------------------------------------------------------------


def _reset(db: TestDatabase, seeds: str, prefix: int, aio: bool = False) -> None:
    engine = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            inspector = sa.inspect(conn)
            for table in ("effects", "seedguard_ledger", "seedguard_ledger_version",
                          *(f"t_{name}" for name in UNITS)):
                if inspector.has_table(table):
                    conn.execute(sa.text(f"DROP TABLE {table}"))
            conn.execute(sa.text(
                "CREATE TABLE effects (unit VARCHAR(255) NOT NULL, value VARCHAR(255))"))
    finally:
        engine.dispose()
    if prefix:
        _apply(db, aio, seeds=seeds, target=UNITS[prefix - 1], lock_timeout=10)


def _state(db: TestDatabase) -> tuple[Counter[str], dict[str, str]]:
    engine = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            effects = Counter(row[0] for row in conn.execute(sa.text("SELECT unit FROM effects")))
            ledger: dict[str, str] = {}
            inspector = sa.inspect(conn)
            if inspector.has_table("seedguard_ledger"):
                ledger = {row[0]: row[1] for row in conn.execute(
                    sa.text("SELECT name, status FROM seedguard_ledger"))}
            # A unit's table (DDL trials): counted like a side effect.
            for name in UNITS:
                if inspector.has_table(f"t_{name}"):
                    effects[f"t_{name}"] += 1
    finally:
        engine.dispose()
    return effects, ledger


def _check_invariant(db: TestDatabase, where: str, ddl: bool = False) -> None:
    effects, ledger = _state(db)
    for name in UNITS:
        assert effects[name] <= 1, f"{where}: {name} done {effects[name]} times"
        assert (effects[name] == 1) == (ledger.get(name) == "applied"), (
            f"{where}: {name}: effect {effects[name]}, ledger {ledger.get(name)}"
        )
        if ddl:
            assert (effects[f"t_{name}"] == 1) == (ledger.get(name) == "applied"), (
                f"{where}: {name}: table {effects[f't_{name}']}, ledger {ledger.get(name)}"
            )
    assert set(ledger) <= set(UNITS)


def _trial(db: TestDatabase, seeds: str, point: str, rng: random.Random,
           ddl: bool = False, aio: bool = False) -> str:
    """One trial; returns a word on where the kill landed."""
    prefix = 0 if point == "ledger-create" else rng.randrange(len(UNITS))
    _reset(db, seeds, prefix, aio)
    url = async_url(db) if aio else db.url
    k = rng.randrange(prefix, len(UNITS))
    outcome = point
    if point == "random":
        pid, fd = _fork_applier(url, seeds, aio=aio)
        _wait_byte(fd, b"s")
        time.sleep(rng.uniform(0.0, 0.08))
        status = _kill(pid, fd)
        outcome = "random:finished" if os.WIFEXITED(status) else "random:killed"
    elif point == "lock-wait":
        holder, holder_fd = _fork_applier(url, seeds, hook="in-unit", k=k, aio=aio)
        assert _wait_byte(holder_fd, b"k"), "holder never reached its unit"
        other_host = db.kind != "sqlite" and rng.random() < 0.5
        lock_path = str(db.tmp_path / f"other-host-{rng.random()}.lock") if other_host else None
        waiter, waiter_fd = _fork_applier(url, seeds, lock_path=lock_path, aio=aio)
        assert _wait_byte(waiter_fd, b"s")
        time.sleep(rng.uniform(0.05, 0.3))  # now blocked on the file or database lock
        waiter_status = _kill(waiter, waiter_fd)
        assert os.WIFSIGNALED(waiter_status), "the waiter finished while the lock was held"
        _kill(holder, holder_fd)
        outcome = "lock-wait:db-lock" if other_host else "lock-wait:file-lock"
    else:
        pid, fd = _fork_applier(url, seeds, hook=point, k=k, aio=aio)
        reached = _wait_byte(fd, b"k")
        _kill(pid, fd)
        assert reached, f"child never reached {point}"
    _check_invariant(db, f"after {outcome}", ddl)
    started = time.monotonic()
    _apply(db, aio, seeds=seeds, lock_timeout=2)  # LockTimeout if a lock was left
    recovery = time.monotonic() - started
    assert recovery < 2.0 + 1.0, f"recovery took {recovery:.2f} s"
    effects, ledger = _state(db)
    expected = Counter(UNITS) + (Counter(f"t_{name}" for name in UNITS) if ddl else Counter())
    assert effects == expected and set(ledger) == set(UNITS), (effects, ledger)
    assert set(ledger.values()) == {"applied"}
    return outcome


@pytest.mark.slow
def test_sigkill_anywhere_leaves_nothing_to_repair(db: TestDatabase, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _run_trials(db, tmp_path, monkeypatch, capsys, TRIALS[db.kind], db.kind)


@pytest.mark.slow
def test_sigkill_anywhere_on_the_async_path(db: TestDatabase, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The same trials with apply_async() on aiosqlite, asyncpg and aiomysql."""
    # Half the sync path's count: the harness and the kill points are the same,
    # and CI's time is shared with every other trial.
    _run_trials(db, tmp_path, monkeypatch, capsys, max(5, TRIALS[db.kind] // 2),
                f"{db.kind} async", aio=True)


@pytest.mark.slow
def test_sigkill_in_transaction_lock_mode(pg: TestDatabase, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The PgBouncer mode (here straight to the server): no lock outlives a transaction."""
    monkeypatch.setenv("SEEDGUARD_LOCK_MODE", "transaction")  # inherited by the forks
    _run_trials(pg, tmp_path, monkeypatch, capsys, 20 if FULL else 5,
                "postgresql lock_mode=transaction")


@pytest.mark.slow
def test_sigkill_with_ddl_in_units(db: TestDatabase, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Units that create tables (transactional DDL): table, effect and row go together."""
    if db.kind == "mariadb":
        pytest.skip("MariaDB commits DDL implicitly: such units are refused (test_integrity)")
    _run_trials(db, tmp_path, monkeypatch, capsys, max(5, TRIALS[db.kind] // 2),
                f"{db.kind} ddl", ddl=True)


def _run_trials(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str], trials: int, label: str,
                ddl: bool = False, aio: bool = False) -> None:
    module = f"fault_seeds_{tmp_path.name.replace('-', '_')}"
    source = DDL_SEEDS if ddl else ASYNC_SEEDS if aio else SEEDS
    write_module(tmp_path, module, source % (UNITS,))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)  # declared once, in the parent: forks inherit it
    seed = int(os.environ.get("SEEDGUARD_FAULT_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    kills = index = 0
    # Count only trials that really killed the applier: a "random" one whose
    # applier finished before the signal is recorded but does not count.
    while kills < trials:
        point = KILL_POINTS[index % len(KILL_POINTS)]
        try:
            outcome = _trial(db, module, point, rng, ddl, aio)
        except AssertionError as err:
            raise AssertionError(f"trial {index} ({point}, SEEDGUARD_FAULT_SEED={seed}): "
                                 f"{err}") from err
        outcomes[outcome] += 1
        kills += outcome != "random:finished"
        index += 1
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfaults[{label}]: {kills} SIGKILL trials ({index} runs), all recovered "
              f"(seed {seed}, {elapsed:.1f} s): {dict(sorted(outcomes.items()))}",
              file=sys.stderr)


def test_waiter_takes_over_when_the_holder_is_killed(db: TestDatabase, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Appliers already waiting finish the job themselves once the holder is SIGKILLed."""
    module = f"takeover_seeds_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, SEEDS % (UNITS,))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)
    _reset(db, module, 0)
    holder, holder_fd = _fork_applier(db.url, module, hook="in-unit", k=2)
    assert _wait_byte(holder_fd, b"k")
    # SQLite has no database lock: there both waiters share the file lock.
    other_host = None if db.kind == "sqlite" else str(tmp_path / "other-host.lock")
    waiters = [_fork_applier(db.url, module), _fork_applier(db.url, module, lock_path=other_host)]
    for _, fd in waiters:
        assert _wait_byte(fd, b"s")
    time.sleep(0.3)  # both blocked: on the file lock, and (servers) on the database lock
    _kill(holder, holder_fd)
    killed_at = time.monotonic()
    for pid, fd in waiters:
        deadline = killed_at + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                _kill(pid, fd)
                pytest.fail("a waiter was still blocked 20 s after the holder died")
            time.sleep(0.02)
        os.close(fd)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    took_over = time.monotonic() - killed_at
    effects, ledger = _state(db)
    assert effects == Counter(UNITS)
    assert set(ledger) == set(UNITS) and set(ledger.values()) == {"applied"}
    assert took_over < 10, f"waiters took {took_over:.1f} s after the holder died"
