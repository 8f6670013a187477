"""One ledger, one lock, however each applier spells the database, the schema or the file.

The database lock's key comes from the server (the database and the schema the
ledger lives in), so appliers configured differently on different hosts (each
with its own file lock) still meet on it. SQLite has no database lock; its
file lock's path is canonical, so every spelling of the file finds the same one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, apply_module, run_each, unit, write_module
from conftest import SERVER_URLS

import seedguard
from seedguard import LockTimeout
from seedguard.locks import Deadline, FileLock, default_lock_path

RERUN_SEED = '''
import time
import sqlalchemy as sa
import seedguard

@seedguard.seed("catalog", on_change="rerun")
def catalog(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('catalog', {value!r})"))
    time.sleep({sleep})
'''


def apply_as(url: str, module: str, lock_path: str, schema: str | None) -> list[str]:
    """Child: one host's applier, with its own lock file and its own ledger-schema setting."""
    if schema is not None:
        os.environ["SEEDGUARD_LEDGER_SCHEMA"] = schema
    return apply_module(url, module, lock_path=lock_path, lock_timeout=60)


@pytest.fixture
def owned_pg(pg: TestDatabase) -> Iterator[tuple[TestDatabase, str]]:
    """The test database, owned by a login role of the same name: a URL with no database
    then means this one (PostgreSQL defaults the database to the user name)."""
    name = sa.engine.make_url(pg.url).database
    assert name
    pg.execute(f"CREATE ROLE {name} LOGIN")
    try:
        pg.execute(f"ALTER DATABASE {name} OWNER TO {name}")
        yield pg, name
    finally:
        pg.dispose()
        pg.execute(f"REASSIGN OWNED BY {name} TO postgres")
        pg.execute(f"DROP OWNED BY {name}")
        pg.execute(f"DROP ROLE {name}")


def _rerun_once(db: TestDatabase, url: str, tmp_path: Path,
                spellings: list[tuple[str, str | None]]) -> None:
    """Apply v1 of a rerun-on-change unit, change it, and let one applier per spelling
    (each with its own lock file, as on its own host) re-run it at once: exactly one does."""
    module = f"rerun_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, module, RERUN_SEED.format(value="v1", sleep=0))
    first = run_each(apply_as, [(url, module, str(tmp_path / "first.lock"), None)],
                     paths=[tmp_path])
    assert first == [("ok", ["catalog"])]
    write_module(tmp_path, module, RERUN_SEED.format(value="v2", sleep=1.0))

    calls = [(spelled_url, module, str(tmp_path / f"host{i}.lock"), schema)
             for i, (spelled_url, schema) in enumerate(spellings)]
    outcomes = run_each(apply_as, calls, paths=[tmp_path])

    assert [status for status, _ in outcomes] == ["ok"] * len(calls), outcomes
    assert sorted(name for _, names in outcomes for name in names) == ["catalog"]
    assert db.effects("catalog") == ["v1", "v2"]


def test_schema_spellings_share_one_database_lock(server_db: TestDatabase,
                                                  tmp_path: Path) -> None:
    server_db.create_effects_table()
    # The ledger's schema named explicitly on one host, left to the server on the
    # other: on MySQL/MariaDB the schema is the database.
    explicit = "public" if server_db.kind == "postgresql" else \
        sa.engine.make_url(server_db.url).database
    _rerun_once(server_db, server_db.url, tmp_path,
                [(server_db.url, explicit), (server_db.url, None)])


def test_database_implied_by_the_user_name_shares_the_lock(
        owned_pg: tuple[TestDatabase, str], tmp_path: Path) -> None:
    db, name = owned_pg
    base = sa.engine.make_url(SERVER_URLS["postgresql"]).set(username=name)
    named = base.set(database=name).render_as_string(hide_password=False)
    # URL.set() ignores None: _replace is how a URL loses its database.
    implied = base._replace(database=None).render_as_string(hide_password=False)
    assert sa.engine.make_url(implied).database is None, implied
    as_owner = TestDatabase(db.kind, named, tmp_path)
    as_owner.create_effects_table()
    _rerun_once(as_owner, named, tmp_path, [(named, None), (implied, None), (named, "public")])


# -- SQLite: one lock file per database file --------------------------------------------


def test_sqlite_spellings_of_one_file_give_one_lock_path(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = data / "app.db"
    database.touch()
    (tmp_path / "link.db").symlink_to(database)
    monkeypatch.chdir(tmp_path)
    expected = data / "app.db.seedguard.lock"
    spellings = [
        f"sqlite:///{database}",
        "sqlite:///data/app.db",
        "sqlite:///./data/../data/app.db",
        "sqlite:///link.db",
        "sqlite:///file:data/app.db?uri=true",
        f"sqlite:///file:{database}?mode=rw&uri=true",
        f"sqlite:///file://{database}?uri=true",
        f"sqlite:///file://localhost{database}?uri=true",
        "sqlite:///file:data/%61pp.db?uri=true",
        f"sqlite+pysqlite:///{database}",
    ]
    paths = {spelling: default_lock_path(sa.engine.make_url(spelling)) for spelling in spellings}
    assert paths == dict.fromkeys(spellings, expected)


def test_sqlite_memory_databases_lock_in_the_private_dir(tmp_path: Path) -> None:
    for spelling in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true",
                     "sqlite:///file:mem1?mode=memory&cache=shared&uri=true"):
        path = default_lock_path(sa.engine.make_url(spelling))
        assert path.parent.name.startswith("seedguard-"), spelling
        assert "memory" not in path.name


def _nothing(session: Any) -> None:
    pass


def test_a_file_uri_applier_waits_for_the_plain_paths_lock(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    plain = f"sqlite:///{database}"
    seedguard.apply(plain, seeds=[])  # the ledger exists; the next apply has one unit to do
    holder = FileLock(default_lock_path(sa.engine.make_url(plain)))
    holder.acquire(Deadline(5))
    try:
        with pytest.raises(LockTimeout):
            seedguard.apply(f"sqlite:///file:{database}?uri=true",
                            seeds=[unit("roles", fn=_nothing)],
                            lock_timeout=0.3)
    finally:
        holder.release()
