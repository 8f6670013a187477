"""Contention: 16 processes released together call apply() with one pending unit.

Exactly one applies. The lock phase runs from the first file-lock acquisition to
the moment the last process is past apply() (its last release, or its last look
at the ledger: a waiter looks after letting the lock go), across all processes
(CLOCK_MONOTONIC is system-wide on Linux); it is compared with the unit's own
run time plus 2 x 16 ledger re-reads.
The file lock is a poll loop (``seedguard.locks.file.FILE_LOCK_POLL_SECONDS``), so
the trial runs at the shipped interval and at 10x it, to show whether polling
dominates.
"""

from __future__ import annotations

import multiprocessing
import py_compile
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import Report, Row, fresh_database, median_time, ms

PROCESSES = 16
UNIT_SECONDS = 0.2
SEEDS = "bench_contention_seeds"


def _child(url: str, seeds_dir: str, lock_path: str, poll: float, barrier: Any,
           queue: Any) -> None:
    sys.path.insert(0, seeds_dir)
    try:
        import seedguard
        import seedguard.locks.file as locking

        locking.FILE_LOCK_POLL_SECONDS = poll
        marks: dict[str, float] = {}
        acquire, release = locking.FileLock.acquire, locking.FileLock.release

        def timed_acquire(self: Any, deadline: Any) -> bool:
            waited = acquire(self, deadline)
            marks.setdefault("acquired", time.monotonic())  # the first time
            return waited

        def timed_release(self: Any) -> None:
            release(self)
            marks["released"] = time.monotonic()

        locking.FileLock.acquire = timed_acquire  # type: ignore[method-assign]
        locking.FileLock.release = timed_release  # type: ignore[method-assign]
        # Import everything before the barrier, like a warmed-up worker would,
        # the URL's DBAPI driver included: psycopg's import alone takes ~200 ms of
        # CPU, and 16 of them on 2 cores made the phase measure imports, not locks.
        import seedguard.runner

        sa.engine.make_url(url).get_dialect().import_dbapi()

        barrier.wait(timeout=60)
        result = seedguard.apply(url, seeds=SEEDS, lock_path=lock_path, lock_timeout=120)
        marks["done"] = time.monotonic()
        queue.put(("ok", [(a.name, a.duration_ms) for a in result.applied], marks))
    except BaseException as err:  # reported to the parent, never lost
        queue.put(("error", repr(err), {}))


def trial(url: str, seeds_dir: Path,
          poll: float) -> tuple[float, float, int, int, float]:
    """(lock phase s, unit's own s, processes that took the lock, units applied,
    the hand-over: s from the applier's release until the last process is past apply())."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM effects")
        conn.exec_driver_sql("DELETE FROM seedguard_ledger WHERE name = 'the-unit'")
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    queue = ctx.Queue()
    lock_path = str(seeds_dir / "bench.lock")
    procs = [ctx.Process(target=_child, args=(url, str(seeds_dir), lock_path, poll, barrier,
                                              queue)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    outcomes = []
    try:
        for _ in procs:
            outcomes.append(queue.get(timeout=180))
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [o for o in outcomes if o[0] == "error"]
    if errors:
        raise RuntimeError(f"contention child failed: {errors[0][1]}")
    applied = [item for o in outcomes for item in o[1]]
    marks = sorted((o[2] for o in outcomes if "acquired" in o[2]), key=lambda m: m["acquired"])
    phase = max(m["done"] for m in marks) - marks[0]["acquired"]
    unit_seconds = applied[0][1] / 1000 if applied else 0.0
    appliers = [o[2] for o in outcomes if o[1]]
    handover = phase - (appliers[0]["released"] - marks[0]["acquired"]) if appliers else phase
    return phase, unit_seconds, len(marks), len(applied), handover


def run(report: Report, kinds: list[str]) -> None:
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="sg_bench_cont_") as tmp, \
                fresh_database(kind) as url:
            _one(report, kind, url, Path(tmp))


def write_module(tmp: Path, applied: str = "") -> None:
    """The seeds module: ``the-unit`` (pending in every trial) after the ``applied`` source.

    Compiled to its ``.pyc`` here, as every start of a deployed app after the
    first finds it (bench/targets.py measures such starts): with
    PYTHONDONTWRITEBYTECODE set in the environment, nothing else writes it, and
    each of the 16 processes compiled the 1,000-unit module from source
    (~30 ms of CPU each) inside the measured window.
    """
    path = tmp / f"{SEEDS}.py"
    path.write_text(applied + textwrap.dedent(f"""
        import time
        import sqlalchemy as sa
        import seedguard

        @seedguard.seed("the-unit")
        def the_unit(session):
            session.execute(sa.text("INSERT INTO effects (unit) VALUES ('the-unit')"))
            time.sleep({UNIT_SECONDS})
        """))
    py_compile.compile(str(path), doraise=True)


def reread_time(url: str, tmp: Path) -> float:
    """The median time of one re-read of the whole ledger (what a waiter does under the lock)."""
    from seedguard.ledger import Ledger

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return median_time(lambda: Ledger("seedguard_ledger").read_current(conn), 20)
    finally:
        engine.dispose()


def shipped_poll() -> float:
    from seedguard.locks import FILE_LOCK_POLL_SECONDS

    return FILE_LOCK_POLL_SECONDS


def _one(report: Report, kind: str, url: str, tmp: Path) -> None:
    write_module(tmp)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
    # Create the ledger first, so the trial measures one pending unit, not DDL.
    sys.path.insert(0, str(tmp))
    try:
        import seedguard
        from seedguard.locks import FILE_LOCK_POLL_SECONDS

        seedguard.apply(url, seeds=[])
    finally:
        sys.path.remove(str(tmp))
    reread = reread_time(url, tmp)
    for poll in (FILE_LOCK_POLL_SECONDS, FILE_LOCK_POLL_SECONDS * 10):
        phase, unit, lockers, applied, handover = trial(url, tmp, poll)
        effects = len(engine.connect().execute(sa.text("SELECT unit FROM effects")).all())
        budget = 2 * PROCESSES * reread + unit
        shipped = poll == FILE_LOCK_POLL_SECONDS
        overhead = phase - unit
        report.add(Row(
            "contention", kind,
            f"16 processes, poll {poll * 1000:g} ms: lock phase", ms(phase),
            f"unit {ms(unit)} + 2x16 re-reads ({ms(reread)} each) = {ms(budget)}",
            phase / budget, "<= 1x budget" if shipped else "",
            (phase <= budget and applied == 1 and effects == 1) if shipped else None,
            note=(f"applied {applied}x, {effects} side effect(s), {lockers} processes took "
                  f"the lock; overhead beyond the unit {ms(overhead)} = "
                  f"{ms(overhead / max(lockers - 1, 1))} per waiter; from the applier's "
                  f"release until every waiter was past apply() (polling, wake-up, each "
                  f"waiter's look at the ledger): {ms(handover)}"),
        ))
    engine.dispose()
