"""A rehearsal (seedguard.plan) against applying the same units, side by side.

    python bench/plan.py [--databases sqlite,postgresql,mariadb] [--units 50] [--rounds 5]

Each round, on a fresh copy of the state (no ledger rows, an empty table), times
``plan()`` of N pending units (each a batch of Core inserts, an update and a
delete) plus one 5,000-row data seed, then ``apply()`` of the same units; the
ratio is the median over rounds. Then, with everything applied, ``plan()``
against ``apply()`` with nothing pending (both a single lock-free look).
Target: a rehearsal costs at most 1.3x the apply.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import sqlalchemy as sa
from _common import Report, Row, fresh_database, median_time, ms

import seedguard
from seedguard.unit import SeedUnit

ITEMS = sa.Table("bench_items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("name", sa.String(50)), sa.Column("grp", sa.Integer))
ROWS_PER_UNIT = 20
DATA_ROWS = 5_000


def _units(count: int) -> list[Any]:
    units: list[Any] = []
    for i in range(count):
        def work(session: Any, i: int = i) -> None:
            base = 1_000_000 + i * ROWS_PER_UNIT
            session.execute(ITEMS.insert(), [{"id": base + j, "name": f"u{i}-{j}", "grp": i}
                                             for j in range(ROWS_PER_UNIT)])
            session.execute(ITEMS.update().where(ITEMS.c.id == base).values(name="first"))
            session.execute(ITEMS.delete().where(ITEMS.c.id == base + 1))
        units.append(SeedUnit(name=f"unit-{i:03d}", fn=work, origin=f"bench:{i}",
                              identity=f"bench:{i}"))
    rows = [{"id": j, "name": f"data-{j}", "grp": -1} for j in range(DATA_ROWS)]
    units.append(seedguard.data_seed("bench-data", table="bench_items", key="id", rows=rows))
    return units


def _reset(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(ITEMS.delete())
        if sa.inspect(conn).has_table("seedguard_ledger"):
            conn.execute(sa.text("DELETE FROM seedguard_ledger"))


def run(report: Report, kinds: list[str], count: int, rounds: int) -> None:
    for kind in kinds:
        with fresh_database(kind) as url:
            engine = sa.create_engine(url)
            try:
                _measure(report, kind, engine, count, rounds)
            finally:
                engine.dispose()


def _measure(report: Report, kind: str, engine: sa.Engine, count: int, rounds: int) -> None:
    ITEMS.metadata.create_all(engine)
    units = _units(count)
    seedguard.apply(engine, seeds=units)  # ledger created, everything imported
    ratios, plans, applies = [], [], []
    for _ in range(rounds):
        _reset(engine)
        started = time.perf_counter()
        planned = seedguard.plan(engine, seeds=units)
        plans.append(time.perf_counter() - started)
        assert planned.ok and len(planned.units) == count + 1, planned
        started = time.perf_counter()
        applied = seedguard.apply(engine, seeds=units)
        applies.append(time.perf_counter() - started)
        assert len(applied.applied) == count + 1
        ratios.append(plans[-1] / applies[-1])
    ratio = statistics.median(ratios)
    report.add(Row("plan", kind, f"rehearse {count} units + a {DATA_ROWS:,}-row data seed",
                   ms(statistics.median(plans)), ms(statistics.median(applies)) + " apply",
                   ratio, "<= 1.3x", ratio <= 1.3))
    noop_plan = median_time(lambda: seedguard.plan(engine, seeds=units), 15)
    noop_apply = median_time(lambda: seedguard.apply(engine, seeds=units), 15)
    report.add(Row("plan", kind, "nothing pending", ms(noop_plan), ms(noop_apply) + " apply",
                   noop_plan / noop_apply, note="neither takes a lock; reported"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb")
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    report = Report()
    run(report, [k for k in args.databases.split(",") if k], args.units, args.rounds)
    print()
    print(report.table())
    return 0 if all(r.passed is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
