"""The four start-up targets, each measured side by side with its reference in one run.

    python bench/run.py --only targets          # 1,000 and 50 units, SQLite and PostgreSQL
    python bench/run.py --only targets --databases sqlite --sizes 1000

At each size N (units applied; the alembic reference has N revisions):

1. CLI no-op: ``seedguard upgrade`` with nothing to do, the whole process,
   against ``python -c "import sqlalchemy; one SELECT of the ledger"``:
   <= 1.3x.
2. First in-process ``apply()`` in a fresh process against alembic's
   in-process no-op ``command.upgrade(cfg, "head")`` (which loads its N
   revision scripts and connects the same way): >= 10x faster, both ways:
   (a) after the libraries are imported in both children (SQLAlchemy, the
   URL's dialect and DBAPI driver, seedguard's runner or alembic's runtime),
   so the seeds module's import, the checksums, the engine's first connection
   and the ledger read count; (b) with only ``import seedguard`` (alembic:
   ``command`` and ``Config``) and the driver imported, so the call also pays
   for importing its run path, as an app's first request does.
3. Warm no-op ``apply()`` (the same process, again) against the bare ledger
   SELECT on the same engine: <= 1.5x.
4. 16 processes released together, one pending unit among the N applied:
   first lock acquisition until the last process is past apply() <= 1.3x (the
   unit's own time + 2 x 16 ledger re-reads).

The targets are set at 1,000 units and get PASS/FAIL there; the figures at
other sizes (50, a typical app) are printed beside them without a verdict.
Beside targets 2 and 3 each database's floor is printed too, also without a
verdict: what the look costs through the bare driver (an engine, its first
connection and one read of the look's rows; the read alone), so that a figure
shows how much of it is seedguard's own.

Every measurement runs in child processes (each a clean interpreter, as a
worker would be), interleaved with its reference so that a change in the
machine's load hits both. Starts are "second and later" starts: the seeds
module has its ``.pyc`` and the checksum cache its entry, as on every start of
a deployed app after the first; the very first start of a new release pays for
both once.
"""

from __future__ import annotations

import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from _common import PYTHON, Report, Row, fresh_database, ms
from noop import alembic_project

SIZES = (1000, 50)
# The targets are set at 1,000 units; the other sizes (50: a typical app) are
# reported beside them, without a verdict.
TARGET_SIZE = 1000
CLI_ROUNDS = 11
FIRST_ROUNDS = 7
CLI_TARGET = 1.3
FIRST_TARGET = 10.0
WARM_TARGET = 1.5
CONTENTION_TARGET = 1.3


def _seeds_source(prefix: str, count: int) -> str:
    blocks = ["import sqlalchemy as sa\nimport seedguard\n"]
    for i in range(count):
        blocks.append(textwrap.dedent(f'''
            @seedguard.seed("{prefix}-{i:04d}")
            def unit_{i}(session):
                session.execute(sa.text("INSERT INTO effects (unit) VALUES ('{prefix}-{i:04d}')"))
            '''))
    return "\n".join(blocks)


class Project:
    """A fresh database with ``size`` applied units and an alembic project at ``size`` revisions."""

    def __init__(self, kind: str, url: str, tmp: Path, size: int) -> None:
        self.kind, self.url, self.tmp, self.size = kind, url, tmp, size
        self.seeds = f"bench_target_seeds_{size}"
        path = tmp / f"{self.seeds}.py"
        path.write_text(_seeds_source(f"u{size}", size))
        # What every deployed start after the first finds (PYTHONDONTWRITEBYTECODE
        # may be set here, so write it explicitly).
        py_compile.compile(str(path), doraise=True)
        self.env = dict(os.environ, PYTHONPATH=str(tmp))
        self.env.pop("SEEDGUARD_URL", None)
        self.ini = alembic_project(tmp / "alembic_project", url, size)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
        engine.dispose()
        # Apply everything once, and start once more (fills the checksum cache).
        for _ in range(2):
            self.python(f"import seedguard; seedguard.apply({url!r}, seeds={self.seeds!r})")
        self.python(f"from alembic.config import Config; from alembic import command; "
                    f"command.upgrade(Config({str(self.ini)!r}), 'head')")

    def python(self, code: str) -> str:
        out = subprocess.run([PYTHON, "-c", code], env=self.env, cwd=self.tmp,
                             capture_output=True, text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(f"bench child failed:\n{out.stderr[-3000:]}")
        return out.stdout

    def wall(self, argv: list[str]) -> float:
        started = time.perf_counter()
        out = subprocess.run(argv, env=self.env, cwd=self.tmp, capture_output=True,
                             timeout=600)
        elapsed = time.perf_counter() - started
        if out.returncode:
            raise RuntimeError(f"bench command failed: {argv}\n{out.stderr.decode()[-3000:]}")
        return elapsed


def _target(size: int, text: str) -> str:
    return text if size == TARGET_SIZE else f"({text} at {TARGET_SIZE})"


def _verdict(size: int, ok: bool) -> bool | None:
    return ok if size == TARGET_SIZE else None


def _interleaved(*measures: Callable[[], float], rounds: int) -> list[float]:
    """The median of each measure over ``rounds`` rounds, taken in turn within each round."""
    times: list[list[float]] = [[] for _ in measures]
    for measure in measures:  # warm the OS caches
        measure()
    for _ in range(rounds):
        for found, measure in zip(times, measures, strict=True):
            found.append(measure())
    return [statistics.median(found) for found in times]


# The rows the lock-free look compares (LedgerReader._compare_rows), read through
# the driver with nothing around it: what no implementation of the look can
# go below. Printed beside targets 2 and 3, without a verdict.
_LOOK_ROWS = ("SELECT version_num, NULL, NULL, NULL FROM seedguard_ledger_version UNION ALL "
              "SELECT name, version, checksum, status FROM seedguard_ledger")


def cli(report: Report, project: Project) -> None:
    exe = shutil.which("seedguard", path=os.path.dirname(PYTHON))
    assert exe is not None, "the seedguard console script is not installed next to python"
    ours = [exe, "--url", project.url, "--seeds", project.seeds, "upgrade"]
    bare = [PYTHON, "-c", f"import sqlalchemy as sa; e = sa.create_engine({project.url!r}); "
            "c = e.connect(); c.execute(sa.text('SELECT name, version FROM seedguard_ledger'))"
            ".all()"]
    a, b = _interleaved(lambda: project.wall(ours), lambda: project.wall(bare),
                        rounds=CLI_ROUNDS)
    report.add(Row("target 1: CLI no-op", project.kind,
                   f"`seedguard upgrade`, {project.size} applied units", ms(a),
                   f"python -c 'import sqlalchemy; one SELECT' {ms(b)}", a / b,
                   _target(project.size, f"<= {CLI_TARGET}x"),
                   _verdict(project.size, a / b <= CLI_TARGET)))


# Both children import their libraries before the clock starts, the URL's
# SQLAlchemy dialect and DBAPI driver included (`import alembic` loads every
# dialect module anyway; psycopg's import alone is most of a PostgreSQL
# child's time and says nothing about either tool).
_DRIVER = "sqlalchemy.engine.make_url({url!r}).get_dialect().import_dbapi()"

_OURS_FIRST = """
import time
import sqlalchemy, seedguard, seedguard.runner
{driver}
t = time.perf_counter()
result = seedguard.apply({url!r}, seeds={seeds!r})
elapsed = time.perf_counter() - t
assert not result.applied and len(result.skipped) == {size}
print(elapsed)
"""

_ALEMBIC_FIRST = """
import time
import sqlalchemy
from alembic import command
from alembic.config import Config
import alembic.runtime.migration, alembic.script
{driver}
t = time.perf_counter()
command.upgrade(Config({ini!r}), "head")
print(time.perf_counter() - t)
"""


_FLOOR_FIRST = """
import time
import sqlalchemy, seedguard, seedguard.runner
{driver}
t = time.perf_counter()
engine = sqlalchemy.create_engine({url!r})
with engine.connect() as conn:
    conn.exec_driver_sql({rows!r}).cursor.fetchall()
engine.dispose()
print(time.perf_counter() - t)
"""


# (b): the same first call where nothing of either tool's run path was
# imported before it, so the call pays those imports, as a user's first
# request does: only ``import seedguard`` (the facade an app imports at its
# top) and alembic's ``command`` and ``Config`` are imported before the clock.
_OURS_COLD = """
import sys, time
import sqlalchemy, seedguard
{driver}
assert "seedguard.runner" not in sys.modules
t = time.perf_counter()
result = seedguard.apply({url!r}, seeds={seeds!r})
elapsed = time.perf_counter() - t
assert not result.applied and len(result.skipped) == {size}
print(elapsed)
"""

_ALEMBIC_COLD = """
import time
import sqlalchemy
from alembic import command
from alembic.config import Config
{driver}
t = time.perf_counter()
command.upgrade(Config({ini!r}), "head")
print(time.perf_counter() - t)
"""


def first_call(report: Report, project: Project) -> None:
    driver = _DRIVER.format(url=project.url)
    ours = _OURS_FIRST.format(url=project.url, seeds=project.seeds, size=project.size,
                              driver=driver)
    theirs = _ALEMBIC_FIRST.format(ini=str(project.ini), driver=driver)
    floor = _FLOOR_FIRST.format(url=project.url, driver=driver, rows=_LOOK_ROWS)
    a, b, c = _interleaved(lambda: float(project.python(ours)),
                           lambda: float(project.python(theirs)),
                           lambda: float(project.python(floor)), rounds=FIRST_ROUNDS)
    report.add(Row("target 2a: first apply(), imports done", project.kind,
                   f"first apply() in a fresh process, {project.size} units", ms(a),
                   f"alembic command.upgrade no-op, {project.size} revisions {ms(b)}", b / a,
                   _target(project.size, f">= {FIRST_TARGET:g}x faster"),
                   _verdict(project.size, b / a >= FIRST_TARGET),
                   note="ratio = alembic time / seedguard time"))
    report.add(Row("target 2, its floor", project.kind,
                   f"first apply() in a fresh process, {project.size} units", ms(a),
                   f"create_engine + first connect + the look's rows, bare {ms(c)}", a / c,
                   note=f"alembic would be {b / c:.1f}x faster than this floor; seedguard's "
                        f"own share of its first apply(): {ms(a - c)}"))
    ours_cold = _OURS_COLD.format(url=project.url, seeds=project.seeds, size=project.size,
                                  driver=driver)
    theirs_cold = _ALEMBIC_COLD.format(ini=str(project.ini), driver=driver)
    a, b = _interleaved(lambda: float(project.python(ours_cold)),
                        lambda: float(project.python(theirs_cold)), rounds=FIRST_ROUNDS)
    report.add(Row("target 2b: first apply(), run path not imported", project.kind,
                   f"first apply() in a fresh process, its imports timed, {project.size} units",
                   ms(a), f"alembic command.upgrade no-op, its imports timed, {project.size} "
                   f"revisions {ms(b)}", b / a,
                   _target(project.size, f">= {FIRST_TARGET:g}x faster"),
                   _verdict(project.size, b / a >= FIRST_TARGET),
                   note="ratio = alembic time / seedguard time; only `import seedguard` (and "
                        "alembic's command, Config) done before the clock"))


_WARM = """
import statistics, time
import sqlalchemy as sa, seedguard
engine = sa.create_engine({url!r})

def bare():
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT name, version FROM seedguard_ledger")).all()

def ours():
    result = seedguard.apply(engine, seeds={seeds!r})
    assert not result.applied and len(result.skipped) == {size}

def median(fn, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)

def floor():
    with engine.connect() as conn:
        conn.exec_driver_sql({rows!r}).cursor.fetchall()

ours(), bare(), floor(), ours(), bare(), floor()
a, b, c = [], [], []
for _ in range(9):
    a.append(median(ours))
    b.append(median(bare))
    c.append(median(floor))
print(statistics.median(a), statistics.median(b), statistics.median(c))
"""


def warm(report: Report, project: Project) -> None:
    out = project.python(_WARM.format(url=project.url, seeds=project.seeds, size=project.size,
                                      rows=_LOOK_ROWS))
    a, b, c = map(float, out.split())
    report.add(Row("target 3: warm no-op", project.kind,
                   f"apply() again, {project.size} applied units", ms(a),
                   f"bare ledger SELECT {ms(b)}", a / b,
                   _target(project.size, f"<= {WARM_TARGET}x"),
                   _verdict(project.size, a / b <= WARM_TARGET)))
    report.add(Row("target 3, its floor", project.kind,
                   f"apply() again, {project.size} applied units", ms(a),
                   f"the look's rows (name, version, checksum, status), bare {ms(c)}", a / c,
                   note=f"the look's rows alone are {c / b:.2f}x the bare ledger SELECT"))


def contention(report: Report, kind: str, url: str, tmp: Path, size: int) -> None:
    import contention as bench_contention

    applied = _seeds_source(f"c{size}", size)
    bench_contention.write_module(tmp, applied)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
    engine.dispose()
    env = dict(os.environ, PYTHONPATH=str(tmp))
    subprocess.run([PYTHON, "-c", f"import seedguard; seedguard.apply({url!r}, "
                    f"seeds={bench_contention.SEEDS!r})"], env=env, cwd=tmp, check=True,
                   capture_output=True, timeout=600)
    reread = bench_contention.reread_time(url, tmp)
    phase, unit, lockers, count, _ = bench_contention.trial(
        url, tmp, bench_contention.shipped_poll())
    budget = unit + 2 * bench_contention.PROCESSES * reread
    report.add(Row("target 4: 16 contending processes", kind,
                   f"lock phase, 1 pending unit among {size} applied", ms(phase),
                   f"unit {ms(unit)} + 2x16 re-reads ({ms(reread)} each) = {ms(budget)}",
                   phase / budget, _target(size, f"<= {CONTENTION_TARGET}x"),
                   _verdict(size, phase / budget <= CONTENTION_TARGET) if count == 1 else False,
                   note=f"applied {count}x; {lockers} processes took the file lock"))


def run(report: Report, kinds: list[str], sizes: tuple[int, ...] = SIZES) -> None:
    for kind in kinds:
        for size in sizes:
            print(f"  {kind}, {size} units: setting up", flush=True)
            with tempfile.TemporaryDirectory(prefix="sg_bench_target_") as tmp, \
                    fresh_database(kind) as url:
                project = Project(kind, url, Path(tmp), size)
                cli(report, project)
                first_call(report, project)
                warm(report, project)
            with tempfile.TemporaryDirectory(prefix="sg_bench_target_c_") as tmp, \
                    fresh_database(kind) as url:
                contention(report, kind, url, Path(tmp), size)


if __name__ == "__main__":  # pragma: no cover - python bench/targets.py
    sys.exit("run it as: python bench/run.py --only targets")
