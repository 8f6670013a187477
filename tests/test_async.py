"""``await seedguard.apply_async()``: async drivers (aiosqlite, asyncpg, aiomysql), ``async def``
units with an ``AsyncSession``, the same ledger and locks, and an event loop that keeps
running while an applier waits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, async_url, child_env, run_processes, write_module

import seedguard
import seedguard.api
from seedguard import ConfigError, LockTimeout, SeedFailed

MIXED = '''
import asyncio, os, time
import sqlalchemy as sa
import seedguard
import seedguard.api

@seedguard.seed("async-roles")
async def async_roles(session):
    await session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('async-roles', 'a')"))
    # Ends only the unit's SAVEPOINT: the unit's transaction is seedguard's.
    await session.commit()
    await session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('async-roles', 'b')"))
    if os.environ.get("SG_FAIL_ASYNC") == "1":
        raise RuntimeError("async unit failed on purpose")

@seedguard.seed("sync-users", after=["async-roles"])
def sync_users(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('sync-users', 'c')"))
'''


def _mixed(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db.create_effects_table()
    module = f"mixed_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, MIXED)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_async_and_sync_units_apply_once(db: TestDatabase, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module = _mixed(db, tmp_path, monkeypatch)
    url = async_url(db)

    first = asyncio.run(seedguard.apply_async(url, seeds=module))
    assert [u.name for u in first.applied] == ["async-roles", "sync-users"]
    assert sorted(db.effects("async-roles")) == ["a", "b"]
    assert db.effects("sync-users") == ["c"]
    assert db.ledger() == [("async-roles", 1), ("sync-users", 1)]

    second = asyncio.run(seedguard.apply_async(url, seeds=module))
    assert second.applied == [] and [u.name for u in second.skipped] == ["async-roles",
                                                                         "sync-users"]
    assert len(db.effects()) == 3


def test_async_units_report_progress_and_events(tmp_path: Path) -> None:
    from seedguard.events import Event, UnitFinished, UnitProgress, UnitStarted

    async def counted(session: Any) -> None:
        for done in (1, 2):
            seedguard.report_progress(done, 2)
            await asyncio.sleep(0)

    seedguard.seed("counted")(counted)
    events: list[Event] = []
    asyncio.run(seedguard.apply_async(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
                                      on_event=events.append))
    assert [type(e) for e in events] == [UnitStarted, UnitProgress, UnitProgress, UnitFinished]
    assert [(e.done, e.total) for e in events if isinstance(e, UnitProgress)] == [(1, 2),
                                                                                 (2, 2)]


def test_apply_async_takes_an_async_engine(db: TestDatabase, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    module = _mixed(db, tmp_path, monkeypatch)

    async def main() -> list[str]:
        engine = create_async_engine(async_url(db))
        try:
            result = await seedguard.apply_async(engine, seeds=module)
            # The engine is the caller's: still usable afterwards.
            async with engine.connect() as conn:
                count = (await conn.execute(sa.text("SELECT COUNT(*) FROM effects"))).scalar()
            assert count == 3
            return [u.name for u in result.applied]
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == ["async-roles", "sync-users"]


def test_failing_async_unit_rolls_back_and_the_retry_applies_it(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _mixed(db, tmp_path, monkeypatch)
    url = async_url(db)
    monkeypatch.setenv("SG_FAIL_ASYNC", "1")
    with pytest.raises(SeedFailed, match="async-roles") as failed:
        asyncio.run(seedguard.apply_async(url, seeds=module))
    assert isinstance(failed.value.__cause__, RuntimeError)
    # Its work before its own `await session.commit()` is rolled back too.
    assert db.effects() == []
    assert db.ledger() == []

    monkeypatch.delenv("SG_FAIL_ASYNC")
    retry = asyncio.run(seedguard.apply_async(url, seeds=module))
    assert [u.name for u in retry.applied] == ["async-roles", "sync-users"]
    assert sorted(db.effects()) == ["async-roles", "async-roles", "sync-users"]


def test_apply_refuses_an_async_engine_or_url(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    seedguard.seed("nothing")(lambda session: None)
    with pytest.raises(ConfigError, match=r"apply_async\(engine\)"):
        seedguard.apply(create_async_engine(url))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"async driver 'aiosqlite'.*apply_async"):
        seedguard.apply(url)
    with pytest.raises(ConfigError, match="apply_async"):
        seedguard.api.status(url)
    assert not (tmp_path / "app.db").exists()  # refused before connecting


def test_sync_apply_refuses_async_def_units(tmp_path: Path) -> None:
    async def work(session: Any) -> None:
        pass

    seedguard.seed("async-unit")(work)
    with pytest.raises(ConfigError, match=r"'async-unit' is an `async def` unit.*apply_async"):
        seedguard.apply(f"sqlite:///{tmp_path / 'app.db'}")


def test_apply_async_with_a_sync_engine_runs_def_units_in_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    url = f"sqlite:///{tmp_path / 'app.db'}"
    threads: list[str] = []
    seedguard.seed("sync-unit")(lambda session: threads.append(threading.current_thread().name))

    async def main() -> list[str]:
        engine = sa.create_engine(url)
        try:
            result = await seedguard.apply_async(engine)
        finally:
            engine.dispose()
        return [u.name for u in result.applied]

    assert asyncio.run(main()) == ["sync-unit"]
    assert threads and threads[0] != threading.main_thread().name  # off the event loop
    # A sync driver's URL works the same way.
    seedguard.seed("sync-unit-2")(lambda session: None)
    assert [u.name for u in asyncio.run(seedguard.apply_async(url)).applied] == ["sync-unit-2"]

    async def work(session: Any) -> None:
        pass

    seedguard.seed("async-unit")(work)
    with pytest.raises(ConfigError, match="async driver"):
        asyncio.run(seedguard.apply_async(url))


def test_apply_async_reads_seedguard_url(db: TestDatabase, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    module = _mixed(db, tmp_path, monkeypatch)
    monkeypatch.setenv("SEEDGUARD_URL", async_url(db))
    monkeypatch.setenv("SEEDGUARD_SEEDS", module)
    result = asyncio.run(seedguard.apply_async())
    assert [u.name for u in result.applied] == ["async-roles", "sync-users"]


def test_missing_async_driver_names_the_extra(tmp_path: Path) -> None:
    # asyncmy is a supported async driver that the test extra does not install.
    with pytest.raises(ConfigError, match=r"seedguard\[async\]"):
        asyncio.run(seedguard.apply_async("mysql+asyncmy://root@127.0.0.1/test"))


def test_import_seedguard_imports_no_async_driver(tmp_path: Path) -> None:
    code = ("import sys, seedguard; "
            "print(sorted(m for m in ('asyncpg', 'aiosqlite', 'aiomysql', 'asyncmy', 'greenlet',"
            " 'sqlalchemy.ext.asyncio', 'asyncio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# -- lock waits end at lock_timeout, on the loop -------------------------------------------


def test_file_lock_wait_ends_in_lock_timeout(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from seedguard.locks import Deadline, FileLock

    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    seedguard.seed("unit")(lambda session: None)
    held = FileLock(tmp_path / "app.db.seedguard.lock")
    held.acquire(Deadline(5))
    try:
        with pytest.raises(LockTimeout, match=r"file lock .* held by pid \d+") as info:
            asyncio.run(seedguard.apply_async(url, lock_timeout=0.3))
        assert info.value.lock == str(tmp_path / "app.db.seedguard.lock")
    finally:
        held.release()
    assert [u.name for u in asyncio.run(seedguard.apply_async(url)).applied] == ["unit"]


def test_database_lock_wait_ends_in_lock_timeout(server_db: TestDatabase,
                                                 tmp_path: Path) -> None:
    """As from another host (a lock file of its own): the database lock's wait, awaited
    on the async driver, ends at lock_timeout and names the holder."""
    from seedguard.locks import Deadline, database_lock, lock_key

    seedguard.seed("unit")(lambda session: None)
    engine = server_db.engine()
    held = database_lock(engine, lock_key(engine, "seedguard_ledger", None))
    held.acquire(Deadline(5))
    try:
        with pytest.raises(LockTimeout, match="database lock") as info:
            asyncio.run(seedguard.apply_async(async_url(server_db), lock_timeout=1,
                                              lock_path=tmp_path / "other-host.lock"))
        assert info.value.holder
    finally:
        held.release()
    result = asyncio.run(seedguard.apply_async(async_url(server_db), lock_timeout=5))
    assert [u.name for u in result.applied] == ["unit"]


# -- many processes, and a loop that keeps running while they wait -----------------------


HOLD_SECONDS = 2.0

SLOW = f'''
import asyncio, time
import sqlalchemy as sa
import seedguard

SPAN = []  # when the unit held the locks, for the processes that waited meanwhile

@seedguard.seed("slow")
async def slow(session):
    await session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'x')"))
    SPAN.append(time.monotonic())
    await asyncio.sleep({HOLD_SECONDS})
    SPAN.append(time.monotonic())
'''


def apply_with_ticker(url: str, module: str, lock_path: str | None) -> dict[str, Any]:
    """Child: ``asyncio.run(apply_async())`` beside a task that ticks every 10 ms.

    Returns what it applied, the ticks during the call, and (from the one that
    applied) when its unit ran, on the machine-wide monotonic clock.
    """
    import importlib

    # First-call imports are not what is measured (they block any loop).
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm  # noqa: F401

    import seedguard.runner

    seeds = importlib.import_module(module)

    async def main() -> dict[str, Any]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        result = await seedguard.apply_async(url, seeds=module, lock_timeout=60,
                                             lock_path=lock_path)
        ended = time.monotonic()
        task.cancel()
        return {"applied": [u.name for u in result.applied], "started": started,
                "ended": ended, "ticks": ticks, "span": list(seeds.SPAN)}

    return asyncio.run(main())


def _longest_gap(ticks: list[float], start: float, end: float) -> float:
    inside = [start, *(t for t in ticks if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


def test_six_processes_apply_once_and_their_loops_keep_ticking(db: TestDatabase,
                                                               tmp_path: Path) -> None:
    db.create_effects_table()
    module = f"slow_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, SLOW)
    slots = tmp_path / "slots"
    slots.mkdir()
    # On the servers half the processes take a lock file of their own, as on other
    # hosts: they wait on the database lock, the others on the file lock.
    outcomes = run_processes(6, apply_with_ticker_at, async_url(db), module, str(slots),
                             db.kind != "sqlite", paths=[tmp_path])
    assert [d for s, d in outcomes if s != "ok"] == []
    results = [d for _, d in outcomes]
    appliers = [r for r in results if r["applied"]]
    assert len(appliers) == 1 and appliers[0]["applied"] == ["slow"], results
    assert db.effects("slow") == ["x"]
    assert db.ledger() == [("slow", 1)]
    begun, finished = appliers[0]["span"]
    # Every other process waited while the unit ran (for the file lock or, with a lock
    # file of its own, for the database lock), and its loop kept ticking: a blocked
    # loop would show one gap as long as the wait.
    for waiter in (r for r in results if not r["applied"]):
        start, end = max(begun, waiter["started"]), min(finished, waiter["ended"])
        assert end - start > HOLD_SECONDS / 2, (waiter["slot"], start, end)
        assert _longest_gap(waiter["ticks"], start, end) < 0.5, (waiter["slot"], start, end)


def apply_with_ticker_at(url: str, module: str, slots: str, other_hosts: bool) -> dict[str, Any]:
    """Child: :func:`apply_with_ticker`; with ``other_hosts``, every other process (by
    the slot it claims in ``slots``) takes a lock file of its own, as on another host."""
    index = next(i for i in range(64) if _claim(Path(slots) / f"slot{i}"))
    own = other_hosts and index % 2 == 0
    return {**apply_with_ticker(url, module, str(Path(slots) / f"host{index}.lock") if own
                                else None), "slot": index}


def _claim(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# -- the command, given an async URL -------------------------------------------------------


def test_cli_upgrade_and_check_with_an_async_url(db: TestDatabase, tmp_path: Path) -> None:
    db.create_effects_table()
    write_module(tmp_path, "cli_seeds", MIXED)
    env = child_env(tmp_path)
    env["SEEDGUARD_URL"] = async_url(db)  # one URL, shared with the app

    def seedguard_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seedguard", "--seeds", "cli_seeds", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    before = seedguard_cli("check")
    assert before.returncode == 3, before.stdout + before.stderr
    done = seedguard_cli("upgrade", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [u["name"] for u in json.loads(done.stdout)["applied"]] == ["async-roles",
                                                                       "sync-users"]
    after = seedguard_cli("check")
    assert after.returncode == 0, after.stdout + after.stderr
    again = seedguard_cli("upgrade")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert sorted(db.effects()) == ["async-roles", "async-roles", "sync-users"]
    # The ledger commands take the same locks, on the same loop.
    forgot = seedguard_cli("forget", "async-roles", "--yes")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert db.ledger() == [("sync-users", 1)]
    status = seedguard_cli("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert {u["name"]: u["state"] for u in json.loads(status.stdout)["units"]} == {
        "async-roles": "pending", "sync-users": "applied"}
    assert seedguard_cli("upgrade").returncode == 0
    assert db.ledger() == [("async-roles", 1), ("sync-users", 1)]


def test_cli_refuses_async_units_with_a_sync_url(db: TestDatabase, tmp_path: Path) -> None:
    db.create_effects_table()
    write_module(tmp_path, "cli_seeds", MIXED)
    done = subprocess.run([sys.executable, "-m", "seedguard", "--url", db.url, "--seeds",
                           "cli_seeds", "upgrade"], cwd=tmp_path, env=child_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "async def" in done.stderr and db.ledger() == []



def test_cli_reads_an_async_url_from_pyproject(tmp_path: Path) -> None:
    write_module(tmp_path, "py_seeds", '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("made")
async def made(session):
    await session.execute(sa.text("CREATE TABLE made (id INTEGER)"))
''')
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.seedguard]\nurl = "{url}"\nseeds = "py_seeds"\n')
    done = subprocess.run([sys.executable, "-m", "seedguard", "upgrade"], cwd=tmp_path,
                          env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied 1 unit(s)" in done.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        assert "made" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
