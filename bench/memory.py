"""Memory: a data seed from a 1,000,000-row CSV, peak RSS against the interpreter's baseline.

The seed runs in a fresh child process. Its baseline is the peak RSS after
importing seedguard and SQLAlchemy and connecting (what any app pays anyway);
the measurement is the peak RSS after the seed applied. Both are the process's
RSS high-water mark (``VmHWM``), so the difference is the seed's own peak.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

from _common import PYTHON, Report, Row, fresh_database

LIMIT_MB = 100.0

CHILD = textwrap.dedent('''
    import json, sys, time
    import sqlalchemy as sa
    import seedguard

    def high_water_kb():
        # VmHWM belongs to this process image; ru_maxrss would carry the
        # parent's peak across fork + exec (Linux keeps it in signal_struct).
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    url, path, with_refs = sys.argv[1], sys.argv[2], sys.argv[3] == "refs"
    metadata = sa.MetaData()
    kinds = sa.Table(
        "kinds", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(20), nullable=False, unique=True),
    )
    table = sa.Table(
        "big", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer),
        sa.Column("price", sa.Numeric(10, 2)),
        *([sa.Column("kind_id", sa.ForeignKey("kinds.id"))] if with_refs else []),
    )
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(kinds.insert(), [{"name": f"kind-{i}"} for i in range(20)])
    import seedguard.runner, seedguard.ledger, seedguard.refs  # what apply() imports anyway
    base = high_water_kb()
    unit = seedguard.data_seed("big", table=table, key="code", path=path,
                               refs={"kind_id": ("kinds", "name")} if with_refs else None)
    started = time.perf_counter()
    result = seedguard.apply(engine, seeds=[unit])
    elapsed = time.perf_counter() - started
    peak = high_water_kb()
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT COUNT(*) FROM big")).scalar()
    print(json.dumps({"base_kb": base, "peak_kb": peak, "seconds": elapsed, "rows": count,
                      "applied": [u.name for u in result.applied]}))
''')


def write_csv(path: Path, rows: int, *, refs: bool = False) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["code", "name", "qty", "price", *(["kind_id"] if refs else [])])
        for i in range(rows):
            writer.writerow([f"code-{i:08d}", f"name number {i}", i % 1000,
                             f"{i % 100000 / 100:.2f}", *([f"kind-{i % 20}"] if refs else [])])


def run(report: Report, rows: int, kinds: tuple[str, ...] = ("sqlite", "postgresql"),
        variants: tuple[str, ...] = ("plain", "refs")) -> None:
    with tempfile.TemporaryDirectory(prefix="sg_bench_mem_") as tmp:
        for variant in variants:
            path = Path(tmp) / f"big-{variant}.csv"
            write_csv(path, rows, refs=variant == "refs")
            size_mb = os.path.getsize(path) / 2**20
            for kind in kinds:
                with fresh_database(kind) as url:
                    out = subprocess.run([PYTHON, "-c", CHILD, url, str(path), variant],
                                         capture_output=True, text=True, timeout=1800)
                    if out.returncode:
                        raise RuntimeError(out.stderr[-3000:])
                    data = json.loads(out.stdout.strip().splitlines()[-1])
                assert data["rows"] == rows and data["applied"] == ["big"], data
                above = (data["peak_kb"] - data["base_kb"]) / 1024
                what = "with a ref column (refs=)" if variant == "refs" else ""
                report.add(Row(
                    "memory", kind, f"data seed of a {rows:,}-row CSV ({size_mb:.0f} MB) {what}"
                    .rstrip(),
                    f"peak +{above:.1f} MB", f"baseline {data['base_kb'] / 1024:.1f} MB",
                    None, f"<= {LIMIT_MB:g} MB above", above <= LIMIT_MB,
                    note=f"seeded in {data['seconds']:.1f} s "
                         f"({rows / data['seconds']:,.0f} rows/s, type conversion included)",
                ))
