"""Shared pieces of the benchmark suite: fresh databases, timing, the result table."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PG_URL = os.environ.get("SEEDGUARD_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("SEEDGUARD_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PYTHON = sys.executable
BENCH_DIR = Path(__file__).resolve().parent


@contextlib.contextmanager
def fresh_database(kind: str, driver: str | None = None) -> Iterator[str]:
    """A URL of a new, empty database of ``kind`` (sqlite, postgresql, mariadb), dropped after.

    Never the shared ``test`` database: ``CREATE DATABASE sg_bench_<random>``.
    """
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sg_bench_") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    server = PG_URL if kind == "postgresql" else MYSQL_URL
    name = f"sg_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.engine.make_url(server).set(database=name)
    if driver:
        url = url.set(drivername=driver)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(repeat))


def write_seeds_module(directory: Path, name: str, count: int, *, sleep: float = 0.0) -> None:
    """A seeds module with ``count`` distinct units (distinct code: distinct checksums)."""
    blocks = [
        "import time\nimport sqlalchemy as sa\nimport seedguard\n",
    ]
    for i in range(count):
        blocks.append(textwrap.dedent(f'''
            @seedguard.seed("unit-{i:04d}")
            def unit_{i}(session):
                session.execute(sa.text("INSERT INTO effects (unit) VALUES ('unit-{i:04d}')"))
                time.sleep({sleep})
            '''))
    (directory / f"{name}.py").write_text("\n".join(blocks))


@dataclass
class Row:
    bench: str
    database: str
    what: str
    measured: str
    reference: str
    ratio: float | None
    target: str = ""
    passed: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        verdict = "" if row.passed is None else ("PASS" if row.passed else "FAIL")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        print(f"  {row.bench} [{row.database}] {row.what}: {row.measured} vs {row.reference} "
              f"= {ratio} {row.target} {verdict} {row.note}".rstrip(), flush=True)

    def table(self) -> str:
        head = ("benchmark", "database", "measured", "reference", "ratio", "target", "result")
        lines = []
        for r in self.rows:
            verdict = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
            lines.append((f"{r.bench}: {r.what}", r.database, r.measured, r.reference, ratio,
                          r.target or "-", verdict))
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
        out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
               "-+-".join("-" * w for w in widths)]
        out += [" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True))
                for line in lines]
        notes = [f"  * {r.bench} [{r.database}] {r.what}: {r.note}" for r in self.rows if r.note]
        return "\n".join(out + (["", *notes] if notes else []))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s"
