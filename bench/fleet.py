"""A fleet of PostgreSQL schemas: `seedguard check/upgrade --schemas` against their floors.

    python bench/fleet.py                   # 1,000 schemas, 20 units each
    python bench/fleet.py --schemas 200     # a quicker look

In a database of its own (created and dropped here), ``--schemas`` schemas
``tenant_0000`` ... each with an ``items`` table and a ledger holding the 20
units of the bench's seeds module. Measured side by side in this run, each the
median of ``--repeat`` whole processes:

- ``check``: ``seedguard check --schemas 'tenant\\_%'``, everything up to date,
  against the floor: one process, one connection (psycopg), one
  ``SELECT name, version`` of each schema's ledger. Target: <= 3x and < 5 s.
- ``upgrade``: one new unit applied to every schema with ``--workers 4``,
  against its floor: one process, one connection, one INSERT into ``items``
  and one ledger INSERT per schema, a transaction each. Reported.
- peak RSS (``ru_maxrss``) of ``check`` and of ``upgrade`` (one new unit
  per schema) at 100 schemas and at all of them: it should not grow with the
  number of targets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, fresh_database

UNITS = 20

SEEDS = '''
import sqlalchemy as sa
import seedguard
{units}
'''
UNIT = '''
@seedguard.seed("unit_{n:02d}")
def unit_{n:02d}(session):
    session.execute(sa.text("INSERT INTO items (n) VALUES ({n})"))
'''

# Runs the CLI and reports the process's peak RSS (KiB on Linux) on stderr at exit.
CLI_WITH_RSS = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: sys.stderr.write('RSS_KB %d\\n' % "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "from seedguard.cli import main\n"
    "main(sys.argv[1:])\n"
)

CHECK_FLOOR = '''
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
with conn.cursor() as cur:
    for index in range(int(sys.argv[2])):
        cur.execute(f"SELECT name, version FROM tenant_{index:04d}.seedguard_ledger")
        cur.fetchall()
'''

UPGRADE_FLOOR = '''
import sys, psycopg
conn = psycopg.connect(sys.argv[1])
with conn.cursor() as cur:
    for index in range(int(sys.argv[2])):
        schema = f"tenant_{index:04d}"
        cur.execute(f"INSERT INTO {schema}.items (n) VALUES (99)")
        cur.execute(f"INSERT INTO {schema}.floor_ledger (name, version, applied_at) "
                    "VALUES ('floor', 1, now())")
        conn.commit()
'''


def seeds_module(folder: Path, count: int) -> None:
    units = "".join(UNIT.format(n=n) for n in range(count))
    (folder / "bench_fleet_seeds.py").write_text(SEEDS.format(units=units))


def run(args: list[str], cwd: Path) -> tuple[float, str, str]:
    # The caller's PYTHONPATH after the seeds' folder: a worktree's seedguard
    # (PYTHONPATH=. python bench/fleet.py) is the one measured.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(cwd), os.environ.get("PYTHONPATH")])))
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0,):
        raise SystemExit(f"{args[:6]}... exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout, done.stderr


def rss_kb(stderr: str) -> int:
    return int(next(line.split()[1] for line in stderr.splitlines() if line.startswith("RSS_KB")))


def setup(url: str, count: int, work: Path) -> None:
    """``count`` schemas at 20 applied units: seedguard applies to the first, the others
    get a copy of its tables (1,000 ledger creations would take minutes)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for index in range(count):
            conn.exec_driver_sql(f"CREATE SCHEMA tenant_{index:04d}; "
                                 f"CREATE TABLE tenant_{index:04d}.items (n integer)")
    seeds_module(work, UNITS)
    run([PYTHON, "-m", "seedguard", "--url", url, "--seeds", "bench_fleet_seeds", "upgrade",
         "--schemas", "tenant\\_0000"], work)
    with engine.connect() as conn:
        for index in range(1, count):
            schema = f"tenant_{index:04d}"
            # Every table of the ledger: without the holder table each lock's
            # heartbeat fails its first write and retries.
            for table in ("seedguard_ledger", "seedguard_ledger_version",
                          "seedguard_ledger_holder", "seedguard_ledger_journal"):
                conn.exec_driver_sql(
                    f"CREATE TABLE {schema}.{table} (LIKE tenant_0000.{table} INCLUDING ALL); "
                    f"INSERT INTO {schema}.{table} SELECT * FROM tenant_0000.{table}")
            conn.exec_driver_sql(f"INSERT INTO {schema}.items SELECT * FROM tenant_0000.items")
            conn.exec_driver_sql(f"CREATE TABLE {schema}.floor_ledger "
                                 "(name text, version int, applied_at timestamp, "
                                 "PRIMARY KEY (name, version))")
        conn.exec_driver_sql("CREATE TABLE tenant_0000.floor_ledger (name text, version int, "
                             "applied_at timestamp, PRIMARY KEY (name, version))")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    count = options.schemas
    with fresh_database("postgresql") as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        setup(url, count, work)
        print(f"setup: {count} schemas x {UNITS} units in {time.perf_counter() - started:.1f} s")
        driver_url = sa.engine.make_url(url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        cli = [PYTHON, "-c", CLI_WITH_RSS, "--url", url, "--seeds", "bench_fleet_seeds", "-q"]

        check_times, floor_times = [], []
        for _ in range(options.repeat):  # interleaved, so both see the same machine load
            floor_times.append(run([PYTHON, "-c", CHECK_FLOOR, driver_url, str(count)], work)[0])
            elapsed, _, err = run([*cli, "check", "--schemas", "tenant\\_%"], work)
            check_times.append(elapsed)
        rss_all = rss_kb(err)
        hundred = "tenant\\_00%" if count >= 100 else "tenant\\_%"
        rss_hundred = rss_kb(run([*cli, "check", "--schemas", hundred], work)[2])
        check, floor = statistics.median(check_times), statistics.median(floor_times)
        verdict = "PASS" if check <= 3 * floor and check < 5 else "FAIL"
        print(f"check, {count} schemas up to date: {check:.2f} s; floor {floor:.2f} s; "
              f"{check / floor:.2f}x (target <= 3x and < 5 s): {verdict}")
        print(f"  runs: check {', '.join(f'{t:.2f}' for t in check_times)}; "
              f"floor {', '.join(f'{t:.2f}' for t in floor_times)}")

        seeds_module(work, UNITS + 1)
        upgrade, _, err = run([*cli, "upgrade", "--schemas", "tenant\\_%", "--workers", "4"],
                              work)
        rss_upgrade = rss_kb(err)
        upgrade_floor = run([PYTHON, "-c", UPGRADE_FLOOR, driver_url, str(count)], work)[0]
        print(f"upgrade, 1 new unit to {count} schemas, --workers 4: {upgrade:.2f} s; floor "
              f"{upgrade_floor:.2f} s; {upgrade / upgrade_floor:.2f}x (reported)")
        # One more new unit, to the first 100 schemas only: the same work per
        # target as above, so its peak RSS is comparable with the whole fleet's.
        seeds_module(work, UNITS + 2)
        rss_upgrade_hundred = rss_kb(run([*cli, "upgrade", "--schemas", hundred,
                                          "--workers", "4"], work)[2])
        print(f"peak RSS of check: {rss_hundred / 1024:.0f} MB at 100 schemas, "
              f"{rss_all / 1024:.0f} MB at {count}; of upgrade (1 new unit each): "
              f"{rss_upgrade_hundred / 1024:.0f} MB at 100, {rss_upgrade / 1024:.0f} MB "
              f"at {count}")


if __name__ == "__main__":
    main()
