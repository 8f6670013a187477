"""Journal: a data seed's apply with the journal that ``downgrade`` reads, against the same
apply with journaling switched off (target <= 1.3x).

Three shapes of one data seed of ``rows`` rows into ``bulk``, on each database:
a fresh load into an empty table (every row journaled as an insert, its values
as written), a re-run where every row differs in two columns (every row
journaled as an update, values before and after), and a re-run with 10%
changed and 1% of the table pruned (the pruned rows journaled whole). Each
measurement is the median of ``REPEAT`` applies on a table reset before each;
the two variants alternate so drift in the machine's load hits both alike.
"""

from __future__ import annotations

import decimal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from _common import Report, Row, fresh_database

import seedguard
import seedguard.journal
from seedguard.unit import SeedUnit

REPEAT = 5
LIMIT_RATIO = 1.3

metadata = sa.MetaData()
bulk = sa.Table(
    "bulk", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("qty", sa.Integer),
    sa.Column("price", sa.Numeric(10, 2)),
)


def make_rows(n: int, *, salt: str = "", every: int = 1) -> list[dict[str, Any]]:
    """``n`` rows; with ``salt``, every ``every``-th row differs in name and price."""
    return [{"code": f"code-{i:07d}", "name": f"name {i}{salt if i % every == 0 else ''}",
             "qty": i % 1000,
             "price": decimal.Decimal(i % 10000 + (7 if salt and i % every == 0 else 0)) / 100}
            for i in range(n)]


@contextmanager
def journaling(on: bool) -> Iterator[None]:
    if on:
        yield
        return
    original = seedguard.journal.current
    seedguard.journal.current = lambda: None
    try:
        yield
    finally:
        seedguard.journal.current = original


def measure(engine: sa.Engine, unit: SeedUnit, prefill: list[dict[str, Any]], *,
            on: bool) -> float:
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for start in range(0, len(prefill), 20_000):
            conn.execute(bulk.insert(), prefill[start:start + 20_000])
        if sa.inspect(conn).has_table("seedguard_ledger"):
            conn.execute(sa.text("DELETE FROM seedguard_ledger"))
    with journaling(on):
        started = time.perf_counter()
        result = seedguard.apply(engine, seeds=[unit])
        elapsed = time.perf_counter() - started
    assert [u.name for u in result.applied] == [unit.name], result
    return elapsed


def run(report: Report, kinds: list[str], rows: int) -> None:
    shapes: list[tuple[str, Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]],
                                               bool]]]] = [
        ("fresh load", lambda: ([], make_rows(rows), False)),
        ("every row updated", lambda: (make_rows(rows), make_rows(rows, salt="x"), False)),
        ("10% updated, 1% pruned",
         lambda: (make_rows(rows + rows // 100), make_rows(rows, salt="x", every=10), True)),
    ]
    for kind in kinds:
        with fresh_database(kind) as url:
            engine = sa.create_engine(url)
            try:
                for index, (label, make) in enumerate(shapes):
                    prefill, data, prune = make()
                    unit = seedguard.data_seed(f"journal-bench-{index}", table=bulk, key="code",
                                               rows=data, prune=prune)
                    times: dict[bool, list[float]] = {True: [], False: []}
                    for _ in range(REPEAT):
                        for on in (False, True):
                            times[on].append(measure(engine, unit, prefill, on=on))
                    with_journal = statistics.median(times[True])
                    without = statistics.median(times[False])
                    ratio = with_journal / without
                    report.add(Row("journal", kind, f"data seed of {rows:,} rows, {label}",
                                   f"{with_journal * 1000:.0f} ms with journal",
                                   f"{without * 1000:.0f} ms without", ratio,
                                   f"<= {LIMIT_RATIO:g}x", ratio <= LIMIT_RATIO))
            finally:
                engine.dispose()
