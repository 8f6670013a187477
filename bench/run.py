"""Run every benchmark and print one table of side-by-side ratios with PASS/FAIL per target.

    python bench/run.py                 # everything (a few minutes)
    python bench/run.py --only noop,bulk --databases sqlite,postgresql

Not a unit test and not run in CI: it needs the PostgreSQL and MariaDB servers
of the test setup (SEEDGUARD_BENCH_PG_URL / SEEDGUARD_BENCH_MYSQL_URL) and
creates and drops databases named sg_bench_<random> on them.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time

import sqlalchemy as sa
from _common import Report

import seedguard

SECTIONS = ("targets", "noop", "async", "bulk", "mysqlbulk", "refs", "threshold", "contention",
            "memory", "plan", "dump", "journal", "cli")
KINDS = ("sqlite", "postgresql", "mariadb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections ({', '.join(SECTIONS)})")
    parser.add_argument("--databases", default=",".join(KINDS))
    parser.add_argument("--rows", type=int, default=100_000, help="bulk-load rows")
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--dump-rows", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="1000,50",
                        help="targets: applied-unit counts to measure at (comma-separated)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    logging.basicConfig(level=logging.WARNING)
    print(f"seedguard {seedguard.__version__}, SQLAlchemy {sa.__version__}, "
          f"Python {platform.python_version()}, {platform.machine()}", flush=True)
    report = Report()
    started = time.perf_counter()
    servers = [k for k in kinds if k != "sqlite"]
    if "targets" in only:
        import targets

        print("start-up targets (CLI, first apply, warm apply, contention)", flush=True)
        targets.run(report, [k for k in kinds if k in ("sqlite", "postgresql")],
                    tuple(int(n) for n in args.sizes.split(",") if n.strip()))
    if "noop" in only:
        import noop

        print("no-op start-up", flush=True)
        noop.run(report, [k for k in kinds if k in ("sqlite", "postgresql")])
    if "async" in only:
        import async_noop

        print("no-op start-up, apply_async() vs apply()", flush=True)
        async_noop.run(report, kinds)
    if "threshold" in only and "postgresql" in kinds:
        import bulk

        print("PostgreSQL COPY threshold", flush=True)
        bulk.threshold(report)
    if "bulk" in only:
        import bulk

        print(f"bulk load, {args.rows:,} rows", flush=True)
        bulk.run(report, kinds, args.rows)
    if "mysqlbulk" in only and "mariadb" in kinds:
        import mysql_bulk

        print(f"MariaDB bulk path, {args.rows:,} rows", flush=True)
        mysql_bulk.run(report, args.rows)
    if "refs" in only:
        import refs

        print(f"refs, {args.rows:,} users", flush=True)
        refs.run(report, kinds, args.rows)
    if "contention" in only:
        import contention

        print("contention, 16 processes", flush=True)
        contention.run(report, [k for k in kinds if k in ("sqlite", "postgresql")])
    if "memory" in only:
        import memory

        print(f"memory, {args.memory_rows:,}-row CSV", flush=True)
        memory.run(report, args.memory_rows)
    if "dump" in only:
        import dump

        print(f"dump, {args.dump_rows:,}-row table", flush=True)
        dump.run(report, args.dump_rows, tuple(kinds))
    if "journal" in only:
        import journal

        print(f"journal, {args.rows:,} rows", flush=True)
        journal.run(report, kinds, args.rows)
    if "plan" in only:
        import plan

        print("rehearsal (plan) vs apply", flush=True)
        plan.run(report, kinds, 50, 5)
    if "cli" in only:
        import noop

        print("whole-process CLI no-op", flush=True)
        noop.run_cli(report, [k for k in kinds if k in ("sqlite", "postgresql")])
    del servers
    print(f"\nall benchmarks took {time.perf_counter() - started:.0f} s\n")
    print(report.table())
    goals = [r for r in report.rows if r.bench.startswith("target ")]
    if goals:
        print("\nthe start-up targets, measured in this run:")
        for r in goals:
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
            verdict = "    " if r.passed is None else ("PASS" if r.passed else "FAIL")
            # Rows without a verdict (other sizes, floors) say what they show instead.
            aside = f"target {r.target}" if r.target else r.note
            print(f"  {verdict}  {r.bench} [{r.database}] {r.what}: "
                  f"{r.measured} vs {r.reference} = {ratio} ({aside})")
    failed = [r for r in report.rows if r.passed is False]
    print(f"\n{sum(r.passed is True for r in report.rows)} PASS, {len(failed)} FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
