"""No-op start-up: warm apply() vs a bare ledger SELECT; first call in a fresh process vs
alembic's no-op upgrade at 1,000 revisions; the whole-process CLI no-op."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import textwrap
from pathlib import Path

import sqlalchemy as sa
from _common import PYTHON, Report, Row, fresh_database, median_time, ms, write_seeds_module

UNITS = 1000
REVISIONS = 1000
SEEDS = "bench_noop_seeds"

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

REVISION = '''revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''


def alembic_project(directory: Path, url: str, count: int) -> Path:
    """``count`` chained empty revisions and an alembic.ini; returns the ini's path."""
    scripts = directory / "alembic"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ENV_PY)
    (scripts / "script.py.mako").write_text("")
    for i in range(count):
        down = f"r{i - 1:04d}" if i else None
        (scripts / "versions" / f"r{i:04d}_step.py").write_text(
            REVISION.format(rev=f"r{i:04d}", down=down))
    ini = directory / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {scripts}\nsqlalchemy.url = {url}\n")
    return ini


def _child_time(code: str, env: dict[str, str], cwd: Path) -> float:
    out = subprocess.run([PYTHON, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                         check=True, timeout=300)
    return float(out.stdout.strip().splitlines()[-1])


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        t = time.perf_counter()
        r = subprocess.run({argv!r}, capture_output=True)
        elapsed = time.perf_counter() - t
        if r.returncode:
            sys.exit(r.stderr.decode()[-2000:])
        print(elapsed)
        """)
    return _child_time(code, env, cwd)


class Project:
    """A fresh database with 1,000 applied units and 1,000 applied alembic revisions."""

    def __init__(self, kind: str, url: str, tmp: Path) -> None:
        self.kind, self.url, self.tmp = kind, url, tmp
        write_seeds_module(tmp, SEEDS, UNITS)
        self.env = dict(os.environ, PYTHONPATH=str(tmp))
        self.ini = alembic_project(tmp / "alembic_project", url, REVISIONS)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
        engine.dispose()
        # Apply everything once, in child processes (keeps this process clean).
        _child_time(f"import seedguard, time; t = time.perf_counter(); "
                    f"seedguard.apply({url!r}, seeds={SEEDS!r}); print(time.perf_counter() - t)",
                    self.env, tmp)
        _child_time(f"import time; t = time.perf_counter(); from alembic.config import Config; "
                    f"from alembic import command; command.upgrade(Config({str(self.ini)!r}), "
                    f"'head'); print(time.perf_counter() - t)", self.env, tmp)


def warm(report: Report, project: Project) -> None:
    import sys

    import seedguard

    sys.path.insert(0, str(project.tmp))
    engine = sa.create_engine(project.url)
    try:
        def bare() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT name, version FROM seedguard_ledger")).all()

        def noop() -> None:
            result = seedguard.apply(engine, seeds=SEEDS)
            assert not result.applied and len(result.skipped) == UNITS

        # Interleave, so drift in machine load hits both alike.
        apply_times, bare_times = [], []
        noop()
        bare()
        for _ in range(7):
            apply_times.append(median_time(noop, 5, warmup=0))
            bare_times.append(median_time(bare, 5, warmup=0))
        a, b = statistics.median(apply_times), statistics.median(bare_times)
        report.add(Row("no-op warm", project.kind, f"apply() with {UNITS} applied units",
                       ms(a), f"bare ledger SELECT {ms(b)}", a / b, "<= 1.5x", a / b <= 1.5))
    finally:
        sys.path.remove(str(project.tmp))
        engine.dispose()


def first_call(report: Report, project: Project, repeat: int = 5) -> None:
    ours = (f"import time; t = time.perf_counter(); import seedguard; "
            f"r = seedguard.apply({project.url!r}, seeds={SEEDS!r}); "
            f"assert not r.applied; print(time.perf_counter() - t)")
    theirs = (f"import time; t = time.perf_counter(); from alembic.config import Config; "
              f"from alembic import command; command.upgrade(Config({str(project.ini)!r}), "
              f"'head'); print(time.perf_counter() - t)")
    a = statistics.median(_child_time(ours, project.env, project.tmp) for _ in range(repeat))
    b = statistics.median(_child_time(theirs, project.env, project.tmp) for _ in range(repeat))
    report.add(Row("no-op fresh process", project.kind,
                   f"import + first apply() ({UNITS} units, checksums)", ms(a),
                   f"import + alembic upgrade head at {REVISIONS} revs {ms(b)}", b / a,
                   ">= 10x faster", b / a >= 10,
                   note="ratio = alembic time / seedguard time"))


def cli(report: Report, project: Project, repeat: int = 5) -> None:
    exe = shutil.which("seedguard", path=os.path.dirname(PYTHON))
    probe = subprocess.run([PYTHON, "-c", "import seedguard.cli"], capture_output=True,
                           env=project.env)
    if exe is None or probe.returncode != 0:
        report.add(Row("CLI no-op", project.kind, "seedguard upgrade", "CLI not available", "-",
                       None))
        return
    ours = [exe, "--url", project.url, "--seeds", SEEDS, "upgrade"]
    bare = [PYTHON, "-c", f"import sqlalchemy as sa; e = sa.create_engine({project.url!r}); "
            "c = e.connect(); c.execute(sa.text('SELECT name, version FROM seedguard_ledger'))"
            ".all()"]
    alembic = [os.path.join(os.path.dirname(PYTHON), "alembic"), "-c", str(project.ini),
               "upgrade", "head"]
    times = {}
    for label, argv in (("seedguard", ours), ("bare", bare), ("alembic", alembic)):
        _wall(argv, project.env, project.tmp)  # warm the OS caches
        times[label] = statistics.median(_wall(argv, project.env, project.tmp)
                                         for _ in range(repeat))
    a = times["seedguard"]
    report.add(Row("CLI no-op (whole process)", project.kind, "seedguard upgrade", ms(a),
                   f"python -c 'import sqlalchemy; one SELECT' {ms(times['bare'])}",
                   a / times["bare"], note="ratio = seedguard / bare python"))
    report.add(Row("CLI no-op (whole process)", project.kind, "seedguard upgrade", ms(a),
                   f"alembic upgrade head at {REVISIONS} revs {ms(times['alembic'])}",
                   times["alembic"] / a, note="ratio = alembic / seedguard (higher is better)"))


def run(report: Report, kinds: list[str]) -> None:
    """The warm and fresh-process rows, per database."""
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="sg_bench_noop_") as tmp, \
                fresh_database(kind) as url:
            project = Project(kind, url, Path(tmp))
            warm(report, project)
            first_call(report, project)


def run_cli(report: Report, kinds: list[str]) -> None:
    """The whole-process CLI rows (run last: the CLI is the newest part)."""
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="sg_bench_cli_") as tmp, \
                fresh_database(kind) as url:
            cli(report, Project(kind, url, Path(tmp)))
