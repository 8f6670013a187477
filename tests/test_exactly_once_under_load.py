"""Heavy load: 64 appliers released together, 5 rounds, on PostgreSQL and MariaDB.

20 units; each is introduced in a random round, so every round brings a
random subset of new units (as deploys do). 64 worker processes (forked once,
kept for all rounds) are released together by a barrier each round; half use
the default lock file (same host), half a lock file of their own (as separate
hosts, so only the database lock serialises them). After every round: every
process returned normally, every unit introduced so far is applied exactly
once (one side effect, one ledger row), and the applied lists of the 64
processes add up to exactly the round's new units.

Each applier uses one database connection (units run on the lock's session),
so 64 appliers fit in PostgreSQL's default ``max_connections = 100``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import time
import traceback
from collections import Counter
from typing import Any

import pytest
from _support import TestDatabase, unit

import seedguard

PROCESSES = 64
ROUNDS = 5
UNITS = [f"load-{i:02d}" for i in range(20)]


def _worker(index: int, url: str, plan: list[list[str]], own_lock: str | None,
            barrier: Any, results: Any) -> None:
    for names in plan:
        try:
            barrier.wait(timeout=120)
        except Exception:
            return
        try:
            result = seedguard.apply(url, seeds=[unit(n) for n in names], lock_timeout=120,
                                     lock_path=own_lock)
            outcome: tuple[str, Any] = ("ok", [item.name for item in result.applied])
        except BaseException as err:
            outcome = ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        results.put((index, outcome))


@pytest.mark.slow
def test_64_processes_5_rounds_exactly_once(server_db: TestDatabase,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = server_db
    db.create_effects_table()
    seed = int(os.environ.get("SEEDGUARD_LOAD_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    introduced = {name: rng.randrange(ROUNDS) for name in UNITS}
    plan = [[n for n in UNITS if introduced[n] <= r] for r in range(ROUNDS)]

    # fork: the workers inherit the imported modules, so 64 of them start in
    # milliseconds instead of each importing SQLAlchemy and a driver afresh.
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES + 1)  # the test releases each round
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(
            i, db.url, plan, str(db.tmp_path / f"host-{i}.lock") if i % 2 else None,
            barrier, results))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    timings: list[float] = []
    try:
        for r in range(ROUNDS):
            barrier.wait(timeout=120)
            started = time.monotonic()
            outcomes = dict(results.get(timeout=180) for _ in range(PROCESSES))
            timings.append(time.monotonic() - started)
            errors = [value for status, value in outcomes.values() if status != "ok"]
            assert errors == [], f"round {r}: {len(errors)} failed; first: {errors[0]}"
            applied = Counter(name for _, names in outcomes.values() for name in names)
            new = {n for n in UNITS if introduced[n] == r}
            assert applied == Counter(new), f"round {r}"
            effects = Counter(db.effects())
            assert effects == Counter(plan[r]), f"round {r}: {effects}"
            assert db.ledger() == [(n, 1) for n in sorted(plan[r])]
    finally:
        barrier.abort()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    assert all(proc.exitcode == 0 for proc in procs)
    per_round = ", ".join(f"{t:.2f}" for t in timings)
    new_per_round = [sum(1 for n in UNITS if introduced[n] == r) for r in range(ROUNDS)]
    with capsys.disabled():
        print(f"\nload[{db.kind}]: {PROCESSES} processes x {ROUNDS} rounds, {len(UNITS)} units "
              f"(new per round: {new_per_round}), exactly once; {sum(timings):.2f} s total "
              f"(rounds: {per_round}; seed {seed})", file=sys.stderr)
