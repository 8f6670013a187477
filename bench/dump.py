"""Dump: ``seedguard dump`` of a 1,000,000-row table against the database's own export.

Both run in one fresh child process per database, one after the other, on the
same table (filled by another process): first ``seedguard.dump.dump`` to JSON,
then the database's own export through the driver (PostgreSQL:
``COPY (SELECT ... ORDER BY code) TO STDOUT WITH CSV``; MariaDB and SQLite,
which have no client-side COPY: the same ordered SELECT through an unbuffered
cursor written by :mod:`csv` without conversion, what ``SELECT ... INTO
OUTFILE`` does on the server). Memory is the process's RSS high-water mark
(``VmHWM``) after the dump, above the one after importing and connecting; the
export runs after it, so its own buffers never hide the dump's peak.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap

from _common import PYTHON, Report, Row, fresh_database

LIMIT_MB = 100.0
LIMIT_RATIO = 2.0

CHILD = textwrap.dedent('''
    import csv, json, sys, time
    import sqlalchemy as sa
    import seedguard.dump

    def high_water_kb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    url, rows, out, step = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    metadata = sa.MetaData()
    big = sa.Table(
        "big", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("day", sa.Date),
    )
    if step == "fill":  # a process of its own: its peak is not the measured one's
        engine = sa.create_engine(url)
        metadata.create_all(engine)
        import datetime as dt, decimal
        with engine.begin() as conn:
            for start in range(0, rows, 50_000):
                conn.execute(big.insert(), [
                    {"code": f"code-{i:08d}", "name": f"name number {i}", "qty": i % 1000,
                     "price": decimal.Decimal(i % 100000) / 100,
                     "day": dt.date(2000, 1, 1) + dt.timedelta(days=i % 9000)}
                    for i in range(start, min(rows, start + 50_000))])
        sys.exit(0)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    base = high_water_kb()

    started = time.perf_counter()
    dumped_rows = seedguard.dump.dump(engine, ["big"], key="code", out=out).files[0].rows
    dumped = time.perf_counter() - started
    peak = high_water_kb()  # before the export: the dump's own peak
    query = "SELECT code, name, qty, price, day FROM big ORDER BY code"
    started = time.perf_counter()
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur, open(out + "/export.csv", "wb") as f:
                with cur.copy(f"COPY ({query}) TO STDOUT WITH CSV") as copy:
                    for block in copy:
                        f.write(block)
        finally:
            raw.close()
    else:
        with engine.connect() as conn, open(out + "/export.csv", "w", newline="") as f:
            writer = csv.writer(f)
            streamed = conn.execution_options(stream_results=True, yield_per=10_000) \\
                .exec_driver_sql(query)
            for part in streamed.partitions():
                writer.writerows(part)
    export = time.perf_counter() - started

    print(json.dumps({"base_kb": base, "peak_kb": peak,
                      "export": export, "dump": dumped, "rows": dumped_rows}))
''')


def run(report: Report, rows: int,
        kinds: tuple[str, ...] = ("sqlite", "postgresql", "mariadb")) -> None:
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="sg_bench_dump_") as tmp, \
                fresh_database(kind) as url:
            for step in ("fill", "measure"):
                out = subprocess.run([PYTHON, "-c", CHILD, url, str(rows), tmp, step],
                                     capture_output=True, text=True, timeout=3600)
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
            data = json.loads(out.stdout.strip().splitlines()[-1])
        assert data["rows"] == rows, data
        ratio = data["dump"] / data["export"]
        export = "COPY ... TO STDOUT" if kind == "postgresql" else "streamed SELECT to CSV"
        report.add(Row(
            "dump", kind, f"dump of a {rows:,}-row table to JSON", f"{data['dump']:.1f} s",
            f"{export} {data['export']:.1f} s", ratio, f"<= {LIMIT_RATIO:g}x",
            ratio <= LIMIT_RATIO))
        above = (data["peak_kb"] - data["base_kb"]) / 1024
        report.add(Row(
            "dump", kind, f"dump of a {rows:,}-row table: memory", f"peak +{above:.1f} MB",
            f"baseline {data['base_kb'] / 1024:.1f} MB", None, f"<= {LIMIT_MB:g} MB above",
            above <= LIMIT_MB))
