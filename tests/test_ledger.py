"""The ledger's own schema: its revisions, upgrading in place under the lock, refusing newer.

Policy: a newer seedguard upgrades an older ledger automatically, in place,
under both locks, keeping every row; an older seedguard that meets a ledger
made by a newer one refuses to write to it, on the fast path too.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit

import seedguard
from seedguard import LockTimeout, SeedguardError
from seedguard.ledger import HEAD_REVISION, KNOWN_REVISIONS, Ledger, LedgerRow, migrations_path
from seedguard.locks import Deadline, FileLock, database_lock, lock_key

LEDGER = "seedguard_ledger"


def ledger_config(conn: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes.update(connection=conn, ledger_table=LEDGER, ledger_schema=None)
    return config


def test_head_revision_is_the_migrations_folder_head() -> None:
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    config = ledger_config()
    script = ScriptDirectory.from_config(config)
    # The revision modules read the table name from the environment at import.
    with EnvironmentContext(config, script):
        heads = script.get_heads()
        revisions = {rev.revision for rev in script.walk_revisions()}
    assert heads == [HEAD_REVISION]
    assert revisions == set(KNOWN_REVISIONS)


def test_threads_that_first_ask_for_the_tables_together_all_get_them() -> None:
    # The tables are built on first use; cached_property takes no lock on
    # Python 3.12+, so threads race to build them, and each must succeed.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # a thread switch inside the build, as often as can be
    try:
        for round_ in range(20):
            ledger = Ledger(f"race_{round_}")
            start = threading.Barrier(8)

            def build(ledger: Ledger = ledger, start: threading.Barrier = start) -> str:
                start.wait(timeout=30)
                return f"{ledger.table.name} {ledger.version_table.name}"

            with ThreadPoolExecutor(8) as pool:
                built = [future.result() for future in
                         [pool.submit(build) for _ in range(8)]]
            assert built == [f"race_{round_} race_{round_}_version"] * 8
    finally:
        sys.setswitchinterval(switch)


def test_ledger_table_describes_what_the_migrations_build(db: TestDatabase) -> None:
    seedguard.apply(db.url, seeds=[])  # nothing to apply: creates the ledger only
    engine = db.engine()
    inspector = sa.inspect(engine)
    built = {c["name"] for c in inspector.get_columns(LEDGER)}
    declared = Ledger(LEDGER).table
    assert built == {c.name for c in declared.columns}
    assert {i["name"] for i in inspector.get_indexes(LEDGER)} >= {i.name for i in declared.indexes}


def make_rev1_ledger(db: TestDatabase) -> list[tuple[Any, ...]]:
    """A ledger as seedguard's first release left it: alembic to sg0001, two rows."""
    from alembic import command

    engine = db.engine()
    with engine.connect() as conn:
        command.upgrade(ledger_config(conn), "sg0001")
        conn.commit()
    # As text: sqlite3's default datetime adapter, which wrote this same
    # string, is deprecated since Python 3.12 (a warning, an error here).
    when = dt.datetime(2026, 1, 2, 3, 4, 5).isoformat(" ")
    db.execute(f"INSERT INTO {LEDGER} (name, version, checksum, status, applied_at, "
               "duration_ms, applied_by) VALUES "
               "('roles', 1, 'ast1:aaa', 'applied', :when, 12, 'old-host:1'), "
               "('roles', 2, 'ast1:bbb', 'applied', :when, 34, 'old-host:2')", when=when)
    return rev1_rows(db)


def rev1_rows(db: TestDatabase) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in db.execute(
        f"SELECT name, version, checksum, status, applied_at, duration_ms, applied_by "
        f"FROM {LEDGER}"))


def ledger_revision(db: TestDatabase) -> str:
    return str(db.execute(f"SELECT version_num FROM {LEDGER}_version")[0][0])


def test_rev1_ledger_is_upgraded_in_place_under_the_lock(db: TestDatabase) -> None:
    db.create_effects_table()
    before = make_rev1_ledger(db)
    assert ledger_revision(db) == "sg0001"
    lock_path = db.tmp_path / "seed.lock"
    units = [unit("roles", version=2), unit("users", description="the first users")]

    # While another applier holds the lock, apply() waits and gives up: it does
    # not upgrade the ledger outside the lock.
    holder = FileLock(lock_path)
    holder.acquire(Deadline(5))
    try:
        with pytest.raises(LockTimeout):
            seedguard.apply(db.url, seeds=units, lock_path=lock_path, lock_timeout=0.3)
    finally:
        holder.release()
    assert ledger_revision(db) == "sg0001"
    if db.kind != "sqlite":  # the database lock alone also keeps it out
        engine = db.engine()
        db_lock = database_lock(engine, lock_key(engine, LEDGER, None))
        db_lock.acquire(Deadline(5))
        try:
            with pytest.raises(LockTimeout):
                seedguard.apply(db.url, seeds=units, lock_path=db.tmp_path / "other.lock",
                                lock_timeout=0.3)
        finally:
            db_lock.release()
        assert ledger_revision(db) == "sg0001"

    result = seedguard.apply(db.url, seeds=units, lock_path=lock_path)

    assert ledger_revision(db) == HEAD_REVISION
    assert [u.name for u in result.applied] == ["users"]  # roles v2 was already recorded
    assert [u.name for u in result.skipped] == ["roles"]
    rows = rev1_rows(db)
    assert [row for row in rows if row[0] == "roles"] == before  # every old row intact
    described = dict(db.execute(f"SELECT name, description FROM {LEDGER} WHERE version = 1"))
    assert described == {"roles": None, "users": "the first users"}
    assert db.effects() == ["users"]


def test_no_op_start_up_is_one_query(db: TestDatabase) -> None:
    units = [unit("roles")]
    db.create_effects_table()
    seedguard.apply(db.url, seeds=units)
    engine = db.engine()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, *a: statements.append(stmt))
    result = seedguard.apply(engine, seeds=units)
    assert [u.name for u in result.skipped] == ["roles"]
    assert len(statements) == 1, statements


@pytest.mark.parametrize("rows", [True, False], ids=["with-rows", "empty"])
def test_older_seedguard_refuses_a_newer_ledger(db: TestDatabase, rows: bool) -> None:
    db.create_effects_table()
    seedguard.apply(db.url, seeds=[unit("roles")] if rows else [])
    # What a future release would do: a new revision that adds a column.
    db.execute(f"ALTER TABLE {LEDGER} ADD COLUMN future_column INTEGER")
    db.execute(f"UPDATE {LEDGER}_version SET version_num = 'sg9999'")
    before = db.ledger()

    # Nothing pending: refused on the fast path, before any lock.
    with pytest.raises(SeedguardError, match="'sg9999', made by a newer seedguard"):
        seedguard.apply(db.url, seeds=[unit("roles")] if rows else [])
    # Something pending: refused as well, and nothing is written.
    with pytest.raises(SeedguardError, match="upgrade seedguard"):
        seedguard.apply(db.url, seeds=[unit("roles"), unit("users")])
    assert db.ledger() == before
    assert db.effects() == (["roles"] if rows else [])
    assert ledger_revision(db) == "sg9999"


def test_every_ledger_write_is_checked_by_the_rows_it_matched(db: TestDatabase) -> None:
    db.create_effects_table()
    seedguard.apply(db.url, seeds=[unit("roles")])
    ledger = Ledger(LEDGER)
    engine = db.engine()
    with engine.connect() as conn:
        # Finishing a row that is not running would overwrite another applier's outcome.
        with pytest.raises(SeedguardError, match=r"ledger seedguard_ledger: expected to update "
                                                 r"one row for 'roles' v1, matched 0"):
            ledger.finish(conn, "roles", 1, checksum="x", duration_ms=1)
        conn.rollback()
        row = ledger.row(conn, "roles", 1)
        assert row is not None and row.status == "applied"
        # A claim that lost the race (the row's checksum changed since it was read) is False.
        stale = dt.datetime.now(dt.timezone.utc)
        assert not ledger.claim(conn, "roles", 1, "new", replaces=LedgerRow(
            "roles", 1, "not-its-checksum", "applied", stale, None, None))
        assert ledger.claim(conn, "roles", 1, "new", replaces=row)
        ledger.finish(conn, "roles", 1, checksum="new", duration_ms=1)
        assert ledger.delete(conn, "roles", 2) == 0
        assert ledger.delete(conn, "roles", 1) == 1
        conn.rollback()
    assert db.ledger() == [("roles", 1)]


def test_a_missing_ledger_schema_names_the_statement_that_creates_it(
        server_db: TestDatabase) -> None:
    ledger = Ledger(LEDGER, "sg_no_such_schema")
    create = ("CREATE SCHEMA sg_no_such_schema" if server_db.kind == "postgresql"
              else "CREATE DATABASE sg_no_such_schema")
    with server_db.engine().connect() as conn, pytest.raises(
            seedguard.ConfigError,
            match=rf"schema 'sg_no_such_schema' does not exist; create it \({create}\) or set "
                  r"ledger_schema \(SEEDGUARD_LEDGER_SCHEMA\)"):
        ledger.ensure(conn)


def test_ledger_quirks_are_classes_keyed_by_dialect() -> None:
    from seedguard.ledger.quirks import LedgerQuirks, quirks_for

    # Only on SQLite does comparing in the database beat reading the rows: sqlite3
    # keeps a connection's statements prepared (bench/targets.py).
    assert [name for name in ("sqlite", "postgresql", "mysql", "mariadb", "oracle")
            if quirks_for(name).compares_in_database] == ["sqlite"]
    assert type(quirks_for("mariadb")) is type(quirks_for("mysql"))
    assert quirks_for("mariadb").grant("app", "deploy@%") == (
        "GRANT CREATE, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE ON app.* TO 'deploy'@'%'")
    assert quirks_for("postgresql").grant("app", "deploy") == "GRANT CREATE ON SCHEMA app TO deploy"
    # A database with no class of its own explains nothing rather than guessing.
    assert type(quirks_for("oracle")) is LedgerQuirks
    assert quirks_for("oracle").whoami is None
