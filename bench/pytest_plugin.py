"""A 200-test suite on ``seedguard_session``: 1 worker against 4 (pytest-xdist), per database.

Each run is a real ``python -m pytest`` on a generated project against a fresh
database (so every run includes the seeding, as a CI job does): a schema unit,
a 1,000-row data seed, then 200 tests that each read seeded rows, insert and
commit 20 rows, and check that no other test's rows are visible. Printed side
by side: wall time with 1 worker, with ``-n 4``, their ratio, and on
PostgreSQL also ``-n 4 --seedguard-clone``; CPU is user + system time of
pytest and its workers. A last row runs as many database-free tests, for what
pytest and xdist cost by themselves on the machine.

    python bench/pytest_plugin.py
    python bench/pytest_plugin.py --databases sqlite,postgresql --repeat 3 --tests 200

Needs the servers of the test setup (``SEEDGUARD_BENCH_PG_URL``,
``SEEDGUARD_BENCH_MYSQL_URL``) and the ``test`` extra (pytest-xdist). The
times include pytest's and the workers' start-up; on a machine with fewer
cores than workers, 4 workers cannot be 4x faster.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, fresh_database

SEEDS = '''
import sqlalchemy as sa

import seedguard

metadata = sa.MetaData()
products = sa.Table(
    "products", metadata,
    sa.Column("sku", sa.String(20), primary_key=True),
    sa.Column("price", sa.Integer, nullable=False),
)
orders = sa.Table(
    "orders", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(20), sa.ForeignKey("products.sku"), nullable=False),
    sa.Column("test", sa.Integer, nullable=False),
)


@seedguard.seed("schema", transactional=False)
def schema(session):
    metadata.create_all(session.connection())


seedguard.data_seed("products", table=products, key="sku", after=["schema"],
                    rows=[{"sku": f"p{i:04d}", "price": i} for i in range(1000)])
'''

TESTS = '''
import pytest
import sqlalchemy as sa


@pytest.mark.parametrize("n", range({count}))
def test_order(seedguard_session, n):
    session = seedguard_session
    price = session.execute(sa.text("SELECT price FROM products WHERE sku = :s"),
                            {{"s": f"p{{n % 1000:04d}}"}}).scalar_one()
    assert price == n % 1000
    assert session.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one() == 0
    for i in range(20):
        session.execute(sa.text("INSERT INTO orders (sku, test) VALUES (:s, :t)"),
                        {{"s": f"p{{(n + i) % 1000:04d}}", "t": n}})
    session.commit()
    assert session.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one() == 20
'''


def _project(root: Path, count: int) -> None:
    (root / "seeds_bench.py").write_text(textwrap.dedent(SEEDS))
    (root / "test_bench.py").write_text(textwrap.dedent(TESTS.format(count=count)))
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n"
                                     "seedguard_seeds = seeds_bench\n")


PLAIN = '''
import pytest


@pytest.mark.parametrize("n", range({count}))
def test_plain(n):
    assert sum(range(n)) == n * (n - 1) // 2
'''


@dataclass
class Timing:
    wall: float
    cpu: float  # user + system seconds of pytest and its workers

    def __str__(self) -> str:
        return f"{self.wall:.1f} s (CPU {self.cpu:.1f} s)"


def _run(root: Path, args: list[str], count: int) -> Timing:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SEEDGUARD_", "PYTEST_"))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "pytest", "-q", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or f"{count} passed" not in done.stdout:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(elapsed, cpu)


def _best(kind: str | None, root: Path, args: list[str], count: int, repeat: int) -> Timing:
    times = []
    for _ in range(repeat):
        if kind is None:
            times.append(_run(root, args, count))
            continue
        with fresh_database(kind) as url:
            times.append(_run(root, ["--seedguard-url", url, *args], count))
    return min(times, key=lambda timing: timing.wall)


def _import_cpu(code: str, repeat: int = 8) -> float:
    """Least CPU time (user + system) of a fresh interpreter running ``code``."""
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([PYTHON, "-c", code], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return best


def _startup_cost() -> str:
    # What every pytest run pays for the entry point, fixtures unused: CPU
    # time, as wall time on a shared machine is mostly waiting for a core.
    base = _import_cpu("import pytest")
    plugin = _import_cpu("import pytest, seedguard.pytest_plugin")
    heavy = _import_cpu("import pytest, sqlalchemy")
    return (f"start-up, fixtures unused: `import pytest` {base * 1000:.0f} ms CPU; "
            f"+ seedguard.pytest_plugin {(plugin - base) * 1000:+.0f} ms "
            f"({(plugin - base) / base:.0%}); for scale, + sqlalchemy "
            f"{(heavy - base) * 1000:+.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb")
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per cell")
    options = parser.parse_args(argv)
    kinds = [kind.strip() for kind in options.databases.split(",") if kind.strip()]
    print(f"{options.tests} tests on seedguard_session, best of {options.repeat}, "
          f"{os.cpu_count()} CPU(s); each run on a fresh database, seeding included")
    print("| database | 1 worker | -n 4 | ratio (1 / 4) | -n 4 --seedguard-clone | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sg_bench_pytest_") as tmp:
        root = Path(tmp) / "suite"
        root.mkdir()
        _project(root, options.tests)
        for kind in kinds:
            one = _best(kind, root, [], options.tests, options.repeat)
            four = _best(kind, root, ["-n", "4"], options.tests, options.repeat)
            clone = "— | —"
            if kind == "postgresql":
                cloned = _best(kind, root, ["-n", "4", "--seedguard-clone"], options.tests,
                               options.repeat)
                clone = f"{cloned} | {one.wall / cloned.wall:.2f}x"
            print(f"| {kind} | {one} | {four} | {one.wall / four.wall:.2f}x | {clone} |",
                  flush=True)
        # The same number of tests without a database: what pytest and xdist
        # cost by themselves on this machine (worker start-up, scheduling).
        plain = Path(tmp) / "plain"
        plain.mkdir()
        (plain / "test_plain.py").write_text(textwrap.dedent(PLAIN.format(count=options.tests)))
        (plain / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        one = _best(None, plain, [], options.tests, options.repeat)
        four = _best(None, plain, ["-n", "4"], options.tests, options.repeat)
        print(f"| no database, no plugin fixture | {one} | {four} | "
              f"{one.wall / four.wall:.2f}x | — | — |", flush=True)
    print(_startup_cost())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
