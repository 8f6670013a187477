"""A failure while the locks are held never leaves a locked session in the application's pool.

The ledger's creation is the first thing an applier does under the database
lock; when it fails (a missing schema, no CREATE privilege) the error is a
ConfigError that says what to create or grant, the lock is released on its
own session (or the session is closed), and the next applier meets the same
ConfigError, not a lock held by a pooled connection of the first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, apply_module, run_processes, unit, write_module

import seedguard
from seedguard import ConfigError
from seedguard.locks import MySQLLock, lock_key

PG_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _held_locks(db: TestDatabase) -> int:
    """Advisory locks held in the test database, by anyone."""
    return int(db.execute(PG_ADVISORY_LOCKS)[0][0])


def apply_in_schema(url: str, module: str, schema: str) -> list[str]:
    """Child: another process of the same application, configured with the same schema."""
    import os

    os.environ["SEEDGUARD_LEDGER_SCHEMA"] = schema
    return apply_module(url, module, lock_timeout=5)


def test_missing_schema_is_a_config_error_and_leaves_no_lock(
        server_db: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    db = server_db
    db.create_effects_table()
    missing = f"nowhere_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SEEDGUARD_LEDGER_SCHEMA", missing)
    engine = db.engine()  # pooled, as an application's: the connection goes back to it
    fix = f"CREATE SCHEMA {missing}" if db.kind == "postgresql" else f"CREATE DATABASE {missing}"
    with pytest.raises(ConfigError) as info:
        seedguard.apply(engine, seeds=[unit("roles")], lock_timeout=5)
    assert fix in str(info.value)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    if db.kind == "postgresql":
        assert _held_locks(db) == 0
    else:
        lock_name = MySQLLock(engine, lock_key(engine, "seedguard_ledger", missing)).lock_name
        assert db.execute("SELECT IS_USED_LOCK(:n)", n=lock_name) == [(None,)]

    module = f"seeds_{uuid.uuid4().hex[:8]}"
    write_module(db.tmp_path, module, "import seedguard\n\n@seedguard.seed('roles')\n"
                                      "def roles(session):\n    pass\n")
    [(status, detail)] = run_processes(1, apply_in_schema, db.url, module, missing,
                                       paths=[db.tmp_path])
    assert status == "error"
    assert detail.startswith("ConfigError") and fix in detail, detail
    engine.dispose()


@pytest.fixture
def no_create_role(pg: TestDatabase) -> Iterator[str]:
    """A login role that may connect to the test database but not create tables in it."""
    role = f"sg_ro_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        url = sa.engine.make_url(pg.url).set(username=role)
        yield url.render_as_string(hide_password=False)
    finally:
        pg.dispose()
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE {role}")


def test_no_create_privilege_says_what_to_grant(pg: TestDatabase, no_create_role: str) -> None:
    role = sa.engine.make_url(no_create_role).username
    engine = pg.engine()
    role_engine = sa.create_engine(no_create_role)
    try:
        with pytest.raises(ConfigError) as info:
            seedguard.apply(role_engine, seeds=[unit("roles")], lock_timeout=5)
        assert f"GRANT CREATE ON SCHEMA public TO {role}" in str(info.value)
        assert _held_locks(pg) == 0
        with pytest.raises(ConfigError):  # the same again, not a LockTimeout
            seedguard.apply(role_engine, seeds=[unit("roles")], lock_timeout=2)
    finally:
        role_engine.dispose()
        engine.dispose()


@pytest.fixture
def maria_reader(tmp_path: Path) -> Iterator[tuple[TestDatabase, str]]:
    """A MariaDB database and a user who may read and write it but not create tables."""
    from conftest import make_database, selected_databases

    if "mariadb" not in selected_databases():
        pytest.skip("mariadb not in SEEDGUARD_TEST_DATABASES")
    for db in make_database("mariadb", tmp_path):
        user = f"sg_ro_{uuid.uuid4().hex[:8]}"
        name = sa.engine.make_url(db.url).database
        db.execute(f"CREATE USER '{user}'@'%'")
        try:
            db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name}.* TO '{user}'@'%'")
            url = sa.engine.make_url(db.url).set(username=user, password="")
            yield db, url.render_as_string(hide_password=False)
        finally:
            db.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_no_create_privilege_on_mariadb_says_what_to_grant(
        maria_reader: tuple[TestDatabase, str]) -> None:
    db, url = maria_reader
    with pytest.raises(ConfigError) as info:
        seedguard.apply(url, seeds=[unit("roles")], lock_timeout=5,
                        lock_path=db.tmp_path / "a.lock")
    assert "GRANT CREATE" in str(info.value) and "@" in str(info.value)
    with pytest.raises(ConfigError):  # the lock was released: the same error, not a timeout
        seedguard.apply(url, seeds=[unit("roles")], lock_timeout=2,
                        lock_path=db.tmp_path / "b.lock")
