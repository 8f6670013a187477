"""Many appliers at once, in real processes and threads: every unit exactly once.

Processes are spawned (like gunicorn workers or parallel CI jobs) and released
together by a barrier; the seeds live in a module written to tmp, imported by
each child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _support import (
    TestDatabase,
    apply_module,
    child_env,
    run_processes,
    seeds_source,
    write_module,
)

import seedguard
from seedguard import LockTimeout

UNITS = ["roles", "users", "plans", "settings"]


def _seeds(db: TestDatabase, tmp_path: Path, *, sleep: float = 0.0) -> str:
    db.create_effects_table()
    module = f"seeds_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, seeds_source(UNITS, sleep=sleep))
    return module


def test_16_processes_apply_each_unit_exactly_once(db: TestDatabase, tmp_path: Path) -> None:
    module = _seeds(db, tmp_path, sleep=0.05)
    outcomes = run_processes(16, apply_module, db.url, module, paths=[tmp_path])

    errors = [detail for status, detail in outcomes if status != "ok"]
    assert errors == []
    applied = sorted(name for _, names in outcomes for name in names)
    assert applied == sorted(UNITS)  # each applied by exactly one process
    assert sorted(db.effects()) == sorted(UNITS)
    assert db.ledger() == sorted((name, 1) for name in UNITS)


def test_8_threads_apply_each_unit_exactly_once(db: TestDatabase, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    module = _seeds(db, tmp_path, sleep=0.02)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(module)
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        try:
            results.append(seedguard.apply(db.url, seeds=module))
        except Exception as err:  # collected, asserted below
            results.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sorted(u.name for r in results for u in r.applied) == sorted(UNITS)
    assert sorted(db.effects()) == sorted(UNITS)


def apply_with_own_lock_path(url: str, module: str, lock_dir: str) -> list[str]:
    """Child: defeat the file lock by giving every process a lock file of its own."""
    path = Path(lock_dir) / f"{os.getpid()}.lock"
    return apply_module(url, module, lock_path=path)


def test_database_lock_alone_gives_exactly_once(server_db: TestDatabase,
                                                tmp_path: Path) -> None:
    module = _seeds(server_db, tmp_path, sleep=0.05)
    outcomes = run_processes(16, apply_with_own_lock_path, server_db.url, module,
                             str(tmp_path), paths=[tmp_path])

    assert [d for s, d in outcomes if s != "ok"] == []
    assert sorted(name for _, names in outcomes for name in names) == sorted(UNITS)
    assert sorted(server_db.effects()) == sorted(UNITS)


HOLDER = """
import sys, time, pathlib
import sqlalchemy as sa
import seedguard

url, started = sys.argv[1], pathlib.Path(sys.argv[2])

@seedguard.seed("slow")
def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'partial')"))
    session.flush()
    started.write_text("holding")
    time.sleep(60)

seedguard.apply(url)
"""


def _start_holder(db: TestDatabase, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    db.create_effects_table()
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    started = tmp_path / "started"
    errors = tmp_path / "holder.err"
    with errors.open("wb") as err_file:
        proc = subprocess.Popen([sys.executable, str(script), db.url, str(started)],
                                cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=err_file)
    deadline = time.monotonic() + 60
    while not started.exists():
        if proc.poll() is not None:
            raise AssertionError(f"holder exited early: {errors.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("holder never reached its unit")
        time.sleep(0.02)
    return proc, started


def _slow_again(session: Any) -> None:
    import sqlalchemy as sa

    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'rerun')"))


def test_killed_holder_leaves_no_stale_lock_and_no_half_unit(db: TestDatabase,
                                                             tmp_path: Path) -> None:
    proc, _ = _start_holder(db, tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    from _support import unit

    began = time.monotonic()
    result = seedguard.apply(db.url, seeds=[unit("slow", fn=_slow_again)], lock_timeout=2)
    took = time.monotonic() - began

    assert took < 2
    assert [u.name for u in result.applied] == ["slow"]
    assert db.effects("slow") == ["rerun"]  # the killed unit's write is gone
    assert db.ledger() == [("slow", 1)]


def test_lock_timeout_names_the_holder(db: TestDatabase, tmp_path: Path) -> None:
    proc, _ = _start_holder(db, tmp_path)
    try:
        from _support import unit

        began = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            seedguard.apply(db.url, seeds=[unit("slow", fn=_slow_again)], lock_timeout=0.5)
        took = time.monotonic() - began
    finally:
        proc.kill()
        proc.wait(timeout=30)

    assert took < 5
    message = str(info.value)
    assert f"pid {proc.pid}" in message
    assert "since" in message and "lock_timeout" in message
    assert isinstance(info.value, TimeoutError)
    assert db.effects("slow") == []
