"""Many appliers at once, in real processes and threads: every unit exactly once.

Processes are spawned (like gunicorn workers or parallel CI jobs) and released
together by a barrier; the seeds live in a module written to tmp, imported by
each child. What each database lock must do on its own (appliers on separate
hosts, a holder that times a waiter out or is killed) is the shared lock suite's
(``tests/backends/lock_suite.py``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from _support import (
    TestDatabase,
    apply_module,
    run_processes,
    seeds_source,
    write_module,
)

import seedguard

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
