"""Fleets: a schema (PostgreSQL) or database (MariaDB) per tenant as a target, and
``apply_each`` over many targets, on real servers and real processes.

On PostgreSQL the tenants are schemas inside the test's own database; on
MariaDB they are databases of their own, uniquely named and dropped after.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import (
    EFFECTS_DDL,
    TestDatabase,
    child_env,
    run_processes,
    seeds_source,
    write_module,
)

import seedguard
from seedguard.locks import Deadline, database_lock, lock_key


@dataclass
class Fleet:
    """Tenants on one server: each has an ``effects`` table and no ledger yet."""

    db: TestDatabase
    names: list[str]

    def sql(self, statement: str) -> list[Any]:
        return self.db.execute(statement)

    def effects(self, name: str) -> list[str]:
        return sorted(row[0] for row in self.sql(f"SELECT unit FROM {name}.effects"))

    def ledger(self, name: str) -> list[tuple[str, int]]:
        rows = self.sql(f"SELECT name, version FROM {name}.seedguard_ledger")
        return sorted((row[0], row[1]) for row in rows)


def make_fleet(db: TestDatabase, count: int) -> Iterator[Fleet]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{index}" for index in range(count)]
    kind = "SCHEMA" if db.kind == "postgresql" else "DATABASE"
    created: list[str] = []
    try:
        for name in names:
            db.execute(f"CREATE {kind} {name}")
            created.append(name)
            db.execute(EFFECTS_DDL.replace("TABLE effects", f"TABLE {name}.effects"))
        yield Fleet(db, names)
    finally:
        db.dispose()
        if db.kind == "mariadb":  # databases of their own: the test database's drop misses them
            for name in created:
                db.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def fleet(server_db: TestDatabase) -> Iterator[Fleet]:
    yield from make_fleet(server_db, 3)


def effect_unit(name: str = "roles") -> None:
    @seedguard.seed(name)
    def work(session: Any) -> None:
        # Unqualified: it must land in the target's schema.
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, 'x')"),
                        {"u": name})


def session_setting(conn: sa.Connection, kind: str) -> Any:
    if kind == "postgresql":
        return conn.exec_driver_sql("SHOW search_path").scalar()
    return conn.exec_driver_sql("SELECT DATABASE()").scalar()


# -- Schema -------------------------------------------------------------------------


def test_schema_target_writes_and_records_in_its_schema_only(fleet: Fleet) -> None:
    effect_unit()
    first, second, _ = fleet.names
    result = seedguard.apply(seedguard.Schema(fleet.db.url, first))
    assert [item.name for item in result.applied] == ["roles"]
    assert fleet.effects(first) == ["roles"]
    assert fleet.ledger(first) == [("roles", 1)]
    assert fleet.effects(second) == []
    # No ledger in the server's default schema or database.
    assert "seedguard_ledger" not in fleet.db.tables()
    # Applied once: a second apply finds the schema's own ledger.
    again = seedguard.apply(seedguard.Schema(fleet.db.url, first))
    assert again.applied == [] and [u.name for u in again.skipped] == ["roles"]


def test_schema_connection_goes_back_to_the_pool_as_it_was(fleet: Fleet) -> None:
    """One pooled connection: after a schema's run (applied or failed) the application's
    next checkout resolves names where it did before."""
    engine = fleet.db.engine(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        before = session_setting(conn, fleet.db.kind)
    effect_unit()
    seedguard.apply(seedguard.Schema(engine, fleet.names[0]))
    with engine.connect() as conn:
        assert session_setting(conn, fleet.db.kind) == before

    @seedguard.seed("broken")
    def broken(session: Any) -> None:
        session.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))

    with pytest.raises(seedguard.SeedFailed):
        seedguard.apply(seedguard.Schema(engine, fleet.names[1]))
    with engine.connect() as conn:
        assert session_setting(conn, fleet.db.kind) == before
    # roles committed on its own; broken rolled back, in that schema.
    assert fleet.effects(fleet.names[1]) == ["roles"]
    assert fleet.ledger(fleet.names[1]) == [("roles", 1)]


def test_schema_targets_lock_separately(fleet: Fleet) -> None:
    """Each schema's database lock is its own: one held does not block another."""
    effect_unit()
    engine = fleet.db.engine()
    first, second, _ = fleet.names
    held = database_lock(engine, lock_key(engine, "seedguard_ledger", first))
    held.acquire(Deadline(5))
    try:
        result = seedguard.apply(seedguard.Schema(engine, second), lock_timeout=5)
        assert [item.name for item in result.applied] == ["roles"]
        with pytest.raises(seedguard.LockTimeout):
            seedguard.apply(seedguard.Schema(engine, first), lock_timeout=0.2)
    finally:
        held.release()
    assert fleet.effects(first) == []


def test_schema_on_sqlite_is_refused_with_the_alternative(tmp_path: Path) -> None:
    with pytest.raises(seedguard.ConfigError, match="own URL"):
        seedguard.apply(seedguard.Schema(f"sqlite:///{tmp_path / 'x.db'}", "tenant"))


def test_schema_name_is_checked() -> None:
    with pytest.raises(seedguard.ConfigError, match="Schema name"):
        seedguard.Schema("postgresql://x/y", "")


# -- apply_each -----------------------------------------------------------------------


def test_apply_each_one_failing_target_never_stops_the_others(fleet: Fleet) -> None:
    effect_unit()
    broken = fleet.names[1]
    fleet.sql(f"DROP TABLE {broken}.effects")
    result = seedguard.apply_each([seedguard.Schema(fleet.db.url, n) for n in fleet.names],
                                  workers=2)
    assert not result.ok
    assert list(result.failed) == [broken]
    assert isinstance(result.failed[broken], seedguard.SeedFailed)
    assert sorted(result.results) == sorted(set(fleet.names) - {broken})
    for name in result.results:
        assert fleet.effects(name) == ["roles"] and fleet.ledger(name) == [("roles", 1)]
    assert fleet.ledger(broken) == []
    # Fixed, the next run applies only what is left.
    fleet.sql(EFFECTS_DDL.replace("TABLE effects", f"TABLE {broken}.effects"))
    again = seedguard.apply_each([seedguard.Schema(fleet.db.url, n) for n in fleet.names])
    assert again.ok
    assert {name: [u.name for u in r.applied] for name, r in again.results.items()} == {
        name: (["roles"] if name == broken else []) for name in fleet.names}
    assert list(again.results) == fleet.names  # reported in the caller's order


def test_apply_each_up_to_date_fleet_costs_one_statement_per_server(fleet: Fleet) -> None:
    effect_unit()
    engine = fleet.db.engine()
    targets = [seedguard.Schema(engine, name) for name in fleet.names]
    assert seedguard.apply_each(targets).ok
    statements: list[str] = []
    checkouts: list[object] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    sa.event.listen(engine.pool, "checkout", lambda *args: checkouts.append(args[0]))
    result = seedguard.apply_each(targets, workers=1)
    assert result.ok and all(not r.applied for r in result.results.values())
    assert len(statements) == 1, statements  # every schema's ledger in one statement
    assert len(checkouts) == 1  # one connection for the whole look


def test_check_each_batched_look_tells_each_schema_apart(fleet: Fleet) -> None:
    """Up to date, pending and ledger-less schemas of one server, read together: a schema
    without a ledger fails the batch's statement, and each is then looked at alone."""
    effect_unit()
    engine = fleet.db.engine()
    done, behind, fresh = fleet.names
    assert seedguard.apply_each([seedguard.Schema(engine, done),
                                 seedguard.Schema(engine, behind)]).ok

    @seedguard.seed("more")
    def more(session: Any) -> None:
        pass

    assert seedguard.apply(seedguard.Schema(engine, done)).applied
    from seedguard.fleet import check_each

    targets = [seedguard.Schema(engine, name) for name in fleet.names]
    found = check_each(targets, workers=1)
    assert found.up_to_date == [done]
    assert sorted(found.pending) == sorted([behind, fresh])
    # Without the ledger-less schema the batch answers in one statement.
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    found = check_each(targets[:2], workers=1)
    assert found.up_to_date == [done] and found.pending == [behind]
    assert sum("UNION ALL" in statement for statement in statements) == 1


def test_apply_each_urls_and_engines(server_db: TestDatabase, tmp_path: Path) -> None:
    """Whole databases by URL and by Engine, side by side with SQLite files."""
    server_db.create_effects_table()
    sqlite_url = f"sqlite:///{tmp_path / 'other.db'}"
    sa_engine = sa.create_engine(sqlite_url)
    with sa_engine.begin() as conn:
        conn.exec_driver_sql(EFFECTS_DDL)
    effect_unit()
    try:
        result = seedguard.apply_each([server_db.url, sa_engine])
    finally:
        sa_engine.dispose()
    assert result.ok, result.failed
    assert all([u.name for u in r.applied] == ["roles"] for r in result.results.values())
    assert server_db.effects() == ["roles"]


def test_apply_each_refuses_duplicate_labels_and_bad_options(fleet: Fleet) -> None:
    twice = [seedguard.Schema(fleet.db.url, fleet.names[0])] * 2
    with pytest.raises(seedguard.ConfigError, match="both labelled"):
        seedguard.apply_each(twice)
    with pytest.raises(seedguard.ConfigError, match="workers"):
        seedguard.apply_each([], workers=0)
    with pytest.raises(seedguard.ConfigError, match="lock_path"):
        seedguard.apply_each([], lock_path="/tmp/x.lock")


def test_apply_each_comes_back_to_a_locked_target(fleet: Fleet) -> None:
    """A target whose lock another runner holds is skipped at first and applied last,
    once that runner lets go; nothing waits on it while other targets are left."""
    effect_unit()
    engine = fleet.db.engine()
    locked = fleet.names[0]
    held = database_lock(engine, lock_key(engine, "seedguard_ledger", locked))
    held.acquire(Deadline(5))
    finished: list[str] = []

    def release_later() -> None:
        # Released once every other target is done, or after 10 s at the latest.
        deadline = time.monotonic() + 10
        while len(finished) < len(fleet.names) - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        held.release()

    releaser = threading.Thread(target=release_later)
    releaser.start()
    try:
        result = seedguard.apply_each(
            [seedguard.Schema(engine, name) for name in fleet.names], workers=1,
            lock_timeout=30, on_target=lambda label, outcome: finished.append(label))
    finally:
        releaser.join(timeout=20)
    assert result.ok, result.failed
    assert finished[-1] == locked
    assert finished[:-1] == fleet.names[1:]
    for name in fleet.names:
        assert fleet.effects(name) == ["roles"]


def apply_fleet(url: str, names: list[str], seeds: str, workers: int) -> int:
    """Child entry point: apply_each over the fleet; how many units it applied."""
    import seedguard

    result = seedguard.apply_each([seedguard.Schema(url, name) for name in names],
                                  seeds=seeds, workers=workers, lock_timeout=60)
    if not result.ok:
        raise RuntimeError(f"failed: {result.failed}")
    return sum(len(r.applied) for r in result.results.values())


@pytest.fixture
def big_fleet(server_db: TestDatabase) -> Iterator[Fleet]:
    yield from make_fleet(server_db, 4)


@pytest.mark.slow  # four spawned processes; test_fleet_cli.py races CLI processes by default
def test_runners_racing_on_one_fleet_apply_each_unit_once_per_target(
        big_fleet: Fleet, tmp_path: Path) -> None:
    names = [f"u{index}" for index in range(3)]
    write_module(tmp_path, "fleet_seeds", seeds_source(names, sleep=0.05))
    outcomes = run_processes(3, apply_fleet, big_fleet.db.url, big_fleet.names,
                             "fleet_seeds", 2, paths=[tmp_path])
    assert all(status == "ok" for status, _ in outcomes), outcomes
    assert sum(count for _, count in outcomes) == len(names) * len(big_fleet.names)
    for tenant in big_fleet.names:
        assert big_fleet.effects(tenant) == names
        assert big_fleet.ledger(tenant) == [(name, 1) for name in names]


# -- what each target costs ------------------------------------------------------------


def count_statements(targets: list[seedguard.Schema]) -> tuple[int, seedguard.FleetResult]:
    """``apply_each(targets, workers=2)``, and the statements every engine of this process
    sent meanwhile (the heartbeats' pools included)."""
    statements: list[str] = []
    counting = threading.Lock()

    def count(*args: Any) -> None:
        with counting:
            statements.append(args[2])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        result = seedguard.apply_each(targets, workers=2)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    return len(statements), result


# Statements per target through SQLAlchemy (the driver-level ones that enter a
# schema and leave it come on top): the lock and its heartbeat, one read under
# the lock, the unit's claim, canary, work and record. When apply() looked at
# each target again before its locks and checked the ledger's tables under
# them, a pending target cost 26 (PostgreSQL) and 22 (MariaDB); now 19-20 and
# 16-17 (a heartbeat connection's first use adds two).
PENDING_BOUND = {"postgresql": 21, "mariadb": 18}


def test_apply_each_costs_a_bounded_number_of_statements_per_target(
        server_db: TestDatabase) -> None:
    """An up-to-date fleet costs one statement per server (one batch); a fleet with one
    unit pending everywhere a bounded number per target, the same at 3 and at 6."""
    made = [make_fleet(server_db, count) for count in (3, 6)]
    effect_unit("first")
    engine = server_db.engine()
    per_target: dict[int, float] = {}
    try:
        fleets = [next(each) for each in made]
        for fleet in fleets:
            targets = [seedguard.Schema(engine, name) for name in fleet.names]
            assert seedguard.apply_each(targets, workers=2).ok
            sent, result = count_statements(targets)
            assert sent == 1 and result.ok
        effect_unit("second")
        for fleet in fleets:
            sent, result = count_statements(
                [seedguard.Schema(engine, name) for name in fleet.names])
            assert result.ok, result.failed
            assert all([u.name for u in r.applied] == ["second"]
                       for r in result.results.values())
            for name in fleet.names:
                assert fleet.effects(name) == ["first", "second"]
            per_target[len(fleet.names)] = (sent - 1) / len(fleet.names)  # less the batch
    finally:
        for each in made:
            each.close()
    assert max(per_target.values()) <= PENDING_BOUND[server_db.kind], per_target
    assert per_target[6] <= per_target[3] + 0.5, per_target  # nothing grows with the fleet


_ORM_IMPORTED_BEFORE_THE_WORKERS = '''
import sys, threading
import seedguard

where = []
def hook(event, args):
    if event == "import" and args[0] == "sqlalchemy.orm":
        where.append(threading.current_thread() is threading.main_thread())
sys.addaudithook(hook)
result = seedguard.apply_each([f"sqlite:///{sys.argv[1]}/{name}.db" for name in "abcd"],
                              workers=4, seeds="fleet_units")
assert result.ok, result.failed
print(where)
'''


def test_apply_each_imports_what_units_need_before_its_workers_start(tmp_path: Path) -> None:
    # One worker importing sqlalchemy.orm while another uses Core (a pool's
    # ping) made the second fail on the half-initialised module, now and then.
    write_module(tmp_path, "fleet_units", (
        "import sqlalchemy as sa\nimport seedguard\n\n"
        "@seedguard.seed('one')\n"
        "def one(session):\n"
        "    session.execute(sa.text('CREATE TABLE settings (key TEXT)'))\n"))
    proc = subprocess.run([sys.executable, "-c", _ORM_IMPORTED_BEFORE_THE_WORKERS, str(tmp_path)],
                          env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True]", proc.stdout
