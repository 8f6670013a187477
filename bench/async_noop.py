"""No-op start-up on the async path: warm ``await apply_async()`` vs warm ``apply()``.

Both on the same database with the same 1,000 applied units, each with a warm
engine of its own driver (aiosqlite / pysqlite, asyncpg / psycopg, aiomysql /
pymysql), timed interleaved in one process so machine load hits both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from _common import Report, Row, fresh_database, median_time, ms, write_seeds_module

UNITS = 1000
SEEDS = "bench_async_noop_seeds"
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                 "mariadb": "mysql+aiomysql"}


def compare(report: Report, kind: str, url: str, tmp: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    import seedguard

    write_seeds_module(tmp, SEEDS, UNITS)
    sys.path.insert(0, str(tmp))
    engine = sa.create_engine(url)
    aurl = sa.engine.make_url(url).set(drivername=ASYNC_DRIVERS[kind])
    async_engine = create_async_engine(aurl)
    loop = asyncio.new_event_loop()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
        assert len(seedguard.apply(engine, seeds=SEEDS).applied) == UNITS

        def sync_noop() -> None:
            result = seedguard.apply(engine, seeds=SEEDS)
            assert not result.applied and len(result.skipped) == UNITS

        def async_noop() -> None:
            result = loop.run_until_complete(seedguard.apply_async(async_engine, seeds=SEEDS))
            assert not result.applied and len(result.skipped) == UNITS

        sync_noop()
        async_noop()
        sync_times, async_times = [], []
        for _ in range(7):
            async_times.append(median_time(async_noop, 5, warmup=0))
            sync_times.append(median_time(sync_noop, 5, warmup=0))
        a, s = statistics.median(async_times), statistics.median(sync_times)
        report.add(Row("no-op async", kind, f"await apply_async(), {UNITS} applied units "
                       f"({aurl.drivername})", ms(a), f"apply() {ms(s)} ({engine.url.drivername})",
                       a / s, "<= 1.5x", a / s <= 1.5, note="ratio = apply_async / apply"))
    finally:
        loop.run_until_complete(async_engine.dispose())
        loop.close()
        engine.dispose()
        sys.path.remove(str(tmp))


def run(report: Report, kinds: list[str]) -> None:
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="sg_bench_async_") as tmp, \
                fresh_database(kind) as url:
            compare(report, kind, url, Path(tmp))
