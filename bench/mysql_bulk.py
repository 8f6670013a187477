"""MariaDB bulk upsert, side by side in one run: ``seedguard.upsert`` against the
``LOAD DATA LOCAL INFILE`` ceiling (a fresh load) and PyMySQL ``executemany`` of
``INSERT ... ON DUPLICATE KEY UPDATE`` in 1,000-row batches (a fresh load and a
full-table update), 100,000 rows of an int key, three varchars and an int.

    python bench/run.py --only mysqlbulk --databases mariadb
    python bench/mysql_bulk.py [ROWS]          # alone

Targets: a fresh load within 1.25x of the ceiling's time; a full-table update
never slower than ``executemany`` (ratio >= 1). Also reported: the fallback
(the client not allowing LOCAL INFILE) against ``executemany``. Each figure is
the best of REPEAT rounds, the contenders interleaved within each round.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from _common import Report, Row, fresh_database, ms

import seedguard

REPEAT = 3
BATCH = 1000

metadata = sa.MetaData()
items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("city", sa.String(60)),
    sa.Column("qty", sa.Integer),
)
COLUMNS = ("id", "code", "name", "city", "qty")
UPSERT_SQL = ("INSERT INTO items (id, code, name, city, qty) VALUES (%s, %s, %s, %s, %s) "
              "ON DUPLICATE KEY UPDATE code = VALUES(code), name = VALUES(name), "
              "city = VALUES(city), qty = VALUES(qty)")


def make_rows(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"id": i, "code": f"code-{i:07d}{tag}", "name": f"name {i}{tag}",
             "city": f"city {i % 977}{tag}", "qty": i % 1000} for i in range(1, n + 1)]


def fresh(engine: sa.Engine) -> None:
    metadata.drop_all(engine)
    metadata.create_all(engine)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def executemany(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """The naive path: PyMySQL executemany in 1,000-row batches, one transaction."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        tuples = [tuple(r[c] for c in COLUMNS) for r in rows]
        for start in range(0, len(tuples), BATCH):
            cursor.executemany(UPSERT_SQL, tuples[start:start + BATCH])
        raw.commit()
    finally:
        raw.close()


def load_data(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """The ceiling: write the file, then LOAD DATA LOCAL INFILE straight into the table."""
    raw = engine.raw_connection()
    fd, path = tempfile.mkstemp(suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines("\t".join(str(r[c]) for c in COLUMNS) + "\n" for r in rows)
        cursor = raw.cursor()
        cursor.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE items "
                       "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' "
                       "(id, code, name, city, qty)")
        raw.commit()
    finally:
        raw.close()
        os.unlink(path)


def upsert(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        seedguard.upsert(conn, items, rows, key="id")


def run(report: Report, n: int = 100_000) -> None:
    rows, changed = make_rows(n), make_rows(n, tag="~")
    with fresh_database("mariadb") as url:
        fast = sa.create_engine(url, connect_args={"local_infile": True})
        plain = sa.create_engine(url)  # the client does not allow LOCAL INFILE: the fallback
        try:
            with fast.connect() as conn:
                if not conn.exec_driver_sql("SELECT @@local_infile").scalar():
                    print("  the server has local_infile OFF: seedguard uses its fallback",
                          flush=True)
            _measure(report, n, fast, plain, rows, changed)
        finally:
            fast.dispose()
            plain.dispose()


def _measure(report: Report, n: int, fast: sa.Engine, plain: sa.Engine,
             rows: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for _ in range(REPEAT):
        fresh(fast)
        record("ceiling", timed(lambda: load_data(fast, rows)))
        fresh(fast)
        record("executemany fresh", timed(lambda: executemany(fast, rows)))
        record("executemany update", timed(lambda: executemany(fast, changed)))
        fresh(fast)
        record("upsert fresh", timed(lambda: upsert(fast, rows)))
        record("upsert update", timed(lambda: upsert(fast, changed)))
        fresh(plain)
        record("fallback fresh", timed(lambda: upsert(plain, rows)))
        record("fallback update", timed(lambda: upsert(plain, changed)))
    best = {name: min(values) for name, values in times.items()}
    label = "mariadb"
    ceiling, naive_fresh, naive_update = (best["ceiling"], best["executemany fresh"],
                                          best["executemany update"])
    fresh_ratio = best["upsert fresh"] / ceiling
    report.add(Row("mysql bulk fresh", label, f"upsert {n:,} rows", ms(best["upsert fresh"]),
                   f"LOAD DATA LOCAL INFILE {ms(ceiling)}", fresh_ratio,
                   "<= 1.25x the ceiling's time", fresh_ratio <= 1.25,
                   note=f"best of {REPEAT}; the ceiling includes writing its file"))
    update_ratio = naive_update / best["upsert update"]
    report.add(Row("mysql bulk full update", label, f"upsert {n:,} changed rows",
                   ms(best["upsert update"]), f"executemany ODKU {ms(naive_update)}",
                   update_ratio, ">= 1x (never slower)", update_ratio >= 1.0,
                   note=f"executemany in {BATCH:,}-row batches"))
    report.add(Row("mysql bulk fresh vs executemany", label, f"upsert {n:,} rows",
                   ms(best["upsert fresh"]), f"executemany ODKU {ms(naive_fresh)}",
                   naive_fresh / best["upsert fresh"]))
    report.add(Row("mysql bulk fallback fresh", label, "no LOCAL INFILE on the client",
                   ms(best["fallback fresh"]), f"executemany ODKU {ms(naive_fresh)}",
                   naive_fresh / best["fallback fresh"]))
    report.add(Row("mysql bulk fallback update", label, "no LOCAL INFILE on the client",
                   ms(best["fallback update"]), f"executemany ODKU {ms(naive_update)}",
                   naive_update / best["fallback update"]))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    report = Report()
    run(report, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print()
    print(report.table())
