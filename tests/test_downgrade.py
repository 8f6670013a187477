"""`seedguard downgrade NAME` on each database: a data seed's last application undone
exactly from the journal it wrote in its own transaction (inserted rows deleted, updated
rows and pruned rows put back), or refused with the rows changed since and nothing
changed; code units refused with what to do instead; the unit pending again after."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env, write_module
from click.testing import CliRunner, Result

import seedguard
from seedguard.cli import cli
from seedguard.downgrade import ChangedRow, downgrade
from seedguard.errors import ConfigError, DowngradeRefused, SeedFailed

SEEDS = '''
import pathlib
import seedguard

HERE = pathlib.Path(__file__).parent

@seedguard.seed("tables")
def tables(session):
    pass  # a code unit (the table is made by the test: DDL commits on MariaDB)

seedguard.data_seed("colors", table="colors", key="name", path=HERE / "colors.csv",
                    after=["tables"], prune=True)
'''
CSV = "id,name,hex,pos\n1,red,#ff0000,1\n2,green,#00ff00,2\n3,blue,#0000ff,3\n"
# Before the seed: red with other values (updated), mauve (pruned), a column the
# seed does not write (kept as it is).
BEFORE = [(1, "red", "#ee0000", 7, "mine"), (5, "mauve", "#e0b0ff", None, "theirs")]


@pytest.fixture
def seeds(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db.execute("CREATE TABLE colors (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, "
               "hex VARCHAR(7) NOT NULL, pos INTEGER CHECK (pos > 0), note VARCHAR(20), "
               "CONSTRAINT uq_colors_name UNIQUE (name))")
    for row in BEFORE:
        db.execute("INSERT INTO colors VALUES (:i, :n, :h, :p, :o)", i=row[0], n=row[1],
                   h=row[2], p=row[3], o=row[4])
    name = f"down_{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, name, SEEDS)
    (tmp_path / "colors.csv").write_text(CSV)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def run(db: TestDatabase, seeds: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", db.url, "--seeds", seeds, *args],
                              catch_exceptions=False)


def rows(db: TestDatabase) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.execute("SELECT id, name, hex, pos, note FROM colors "
                                         "ORDER BY id")]


def journal(db: TestDatabase) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.execute(
        "SELECT name, version, action FROM seedguard_ledger_journal ORDER BY name, seq")]


def test_inserted_updated_and_pruned_rows_restored_exactly(db: TestDatabase, seeds: str
                                                           ) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    assert rows(db) == [(1, "red", "#ff0000", 1, "mine"), (2, "green", "#00ff00", 2, None),
                        (3, "blue", "#0000ff", 3, None)]

    result = run(db, seeds, "downgrade", "colors")

    assert result.exit_code == 0, result.output
    assert result.stdout == ("downgraded colors v1: deleted 2, restored 1, re-inserted 1 "
                             "row(s); it is pending again\n")
    assert rows(db) == BEFORE
    assert db.ledger() == [("tables", 1)]
    assert journal(db) == []
    assert [u.name for u in seedguard.apply(db.url, seeds=seeds, dry_run=True).pending] == [
        "colors"]


def test_downgrade_then_upgrade_again_then_downgrade_again(db: TestDatabase, seeds: str
                                                           ) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    seeded = rows(db)
    assert downgrade(db.url, "colors", seeds=seeds).action == "downgraded"

    again = seedguard.apply(db.url, seeds=seeds)

    assert [u.name for u in again.applied] == ["colors"]
    assert rows(db) == seeded
    assert db.ledger() == [("colors", 1), ("tables", 1)]
    assert downgrade(db.url, "colors", seeds=seeds).deleted == 2
    assert rows(db) == BEFORE


def test_a_second_downgrade_changes_nothing(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    assert run(db, seeds, "downgrade", "colors").exit_code == 0

    second = run(db, seeds, "downgrade", "colors", "--json")

    assert second.exit_code == 0
    assert json.loads(second.stdout) == {
        "ok": True, "command": "downgrade", "name": "colors", "action": "unchanged",
        "version": None, "deleted": 0, "restored": 0, "reinserted": 0, "ledger": None,
        "checksum": None}
    assert rows(db) == BEFORE


def test_rows_changed_since_refuse_listing_keys_and_nothing_changes(
        db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    db.execute("UPDATE colors SET hex = '#00ee00' WHERE name = 'green'")  # inserted, changed
    db.execute("DELETE FROM colors WHERE name = 'blue'")  # inserted, deleted since
    db.execute("INSERT INTO colors (id, name, hex) VALUES (5, 'mauve', '#000000')")  # pruned
    db.execute("UPDATE colors SET note = 'edited' WHERE name = 'red'")  # not the seed's column
    now = rows(db)

    with pytest.raises(DowngradeRefused) as refused:
        downgrade(db.url, "colors", seeds=seeds)
    text = run(db, seeds, "downgrade", "colors")
    document = run(db, seeds, "downgrade", "colors", "--json")

    assert sorted(refused.value.rows, key=lambda r: r.key) == [
        ChangedRow("colors", "blue", "deleted"),
        ChangedRow("colors", "green", "changed", {"hex": ("#00ff00", "#00ee00")}),
        ChangedRow("colors", "mauve", "recreated")]
    assert text.exit_code == 3
    assert "3 row(s) it wrote changed since" in text.stderr
    assert "colors 'green' hex '#00ff00' -> '#00ee00'" in text.stderr
    assert "nothing was changed" in text.stderr
    assert document.exit_code == 3
    error = json.loads(document.stdout)["error"]
    assert error["type"] == "DowngradeRefused" and error["exit_code"] == 3
    assert sorted(row["key"] for row in error["rows"]) == ["blue", "green", "mauve"]
    assert rows(db) == now
    assert db.ledger() == [("colors", 1), ("tables", 1)]
    assert [a for _, _, a in journal(db)] == ["begin", "insert", "update", "delete"]


def test_a_code_unit_is_refused_with_what_to_do(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0

    result = run(db, seeds, "downgrade", "tables")

    assert result.exit_code == 2
    assert "'tables' is a code unit" in result.stderr
    assert "`seedguard forget tables`" in result.stderr
    assert db.ledger() == [("colors", 1), ("tables", 1)]


def test_a_stamped_seed_has_no_journal_and_is_refused(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "stamp", "--all", "--yes").exit_code == 0

    with pytest.raises(ConfigError, match="has no journal"):
        downgrade(db.url, "colors", seeds=seeds)
    assert rows(db) == BEFORE


def test_changed_data_downgrades_to_the_data_before(db: TestDatabase, seeds: str,
                                                    tmp_path: Path) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    first = rows(db)
    (tmp_path / "colors.csv").write_text(CSV.replace("#0000ff", "#0000ee") + "4,cyan,#0ff,4\n")
    assert run(db, seeds, "upgrade").exit_code == 0

    back = downgrade(db.url, "colors", seeds=seeds)

    assert (back.ledger, back.deleted, back.restored) == ("reverted", 1, 1)
    assert rows(db) == first
    assert run(db, seeds, "downgrade", "colors").exit_code == 0
    assert rows(db) == BEFORE
    assert db.ledger() == [("tables", 1)]


def test_the_journal_commits_with_the_unit_or_not_at_all(db: TestDatabase, seeds: str,
                                                         tmp_path: Path) -> None:
    # Fails in the database, after the journal took the batch (CHECK pos > 0).
    (tmp_path / "colors.csv").write_text(CSV + "4,cyan,#0ff,-4\n")

    with pytest.raises(SeedFailed):
        seedguard.apply(db.url, seeds=seeds)

    assert rows(db) == BEFORE
    assert journal(db) == []
    assert db.ledger() == [("tables", 1)]


def test_downgrade_waits_for_the_locks_upgrade_takes(db: TestDatabase, seeds: str,
                                                     tmp_path: Path) -> None:
    # The lock held here, the downgrade in another process (as another applier would be).
    from seedguard.locks import Deadline, FileLock

    assert run(db, seeds, "upgrade").exit_code == 0
    seeded = rows(db)
    holder = FileLock(tmp_path / "seeds.lock")
    holder.acquire(Deadline(5))
    try:
        child = subprocess.run(
            [sys.executable, "-m", "seedguard", "--url", db.url, "--seeds", seeds,
             "--lock-path", str(tmp_path / "seeds.lock"), "--lock-timeout", "0.5",
             "downgrade", "colors"],
            capture_output=True, text=True, timeout=60,
            env=child_env(tmp_path, Path(seedguard.__file__).parent.parent))
    finally:
        holder.release()

    assert child.returncode == 4, child.stderr
    assert "timed out" in child.stderr
    assert db.ledger() == [("colors", 1), ("tables", 1)]
    assert rows(db) == seeded


def test_values_of_every_data_type_round_trip(db: TestDatabase, tmp_path: Path) -> None:
    import datetime as day_time
    import decimal

    metadata = sa.MetaData()
    typed = sa.Table(
        "typed", metadata,
        sa.Column("code", sa.String(10), primary_key=True),
        sa.Column("price", sa.Numeric(10, 2)), sa.Column("day", sa.Date),
        sa.Column("at", sa.DateTime), sa.Column("flag", sa.Boolean),
        sa.Column("ratio", sa.Float), sa.Column("blob", sa.LargeBinary(16)))
    metadata.create_all(db.engine())
    old = {"code": "a", "price": decimal.Decimal("1.25"), "day": day_time.date(2001, 2, 3),
           "at": day_time.datetime(2001, 2, 3, 4, 5, 6), "flag": False, "ratio": 0.5,
           "blob": b"\x00\xff"}
    with db.engine().begin() as conn:
        conn.execute(typed.insert(), [old, {**old, "code": "gone"}])
    new = {"code": "a", "price": decimal.Decimal("9.99"), "day": day_time.date(2020, 1, 1),
           "at": day_time.datetime(2020, 1, 1, 0, 0, 1), "flag": True, "ratio": 0.25,
           "blob": b"\x01"}
    seedguard.data_seed("typed", table=typed, key="code", rows=[new], prune=True)

    seedguard.apply(db.url)
    assert downgrade(db.url, "typed").restored == 1

    with db.engine().connect() as conn:
        back = [dict(r._mapping) for r in conn.execute(sa.select(typed).order_by("code"))]
    assert [{**r, "flag": bool(r["flag"]), "blob": bytes(r["blob"])} for r in back] == [
        old, {**old, "code": "gone"}]


def test_composite_keys_and_keys_repeated_across_batches(db: TestDatabase,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A key written by two batches keeps its first "before" and its last "after".
    import seedguard.data.spec

    monkeypatch.setattr(seedguard.data.spec, "BATCH_SIZE", 2)
    metadata = sa.MetaData()
    pairs = sa.Table("pairs", metadata, sa.Column("a", sa.String(5), primary_key=True),
                     sa.Column("b", sa.Integer, primary_key=True),
                     sa.Column("v", sa.String(5)), sa.Column("w", sa.Integer))
    metadata.create_all(db.engine())
    with db.engine().begin() as conn:
        conn.execute(pairs.insert(), [{"a": "x", "b": 1, "v": "old", "w": 0},
                                      {"a": "x", "b": 9, "v": "gone", "w": 9}])
    seedguard.data_seed("pairs", table=pairs, key=["a", "b"], prune=True, rows=[
        {"a": "x", "b": 1, "v": "one", "w": 1}, {"a": "y", "b": 2, "v": "two", "w": 2},
        {"a": "x", "b": 1, "v": "uno", "w": 11}, {"a": "y", "b": 2, "v": "dos", "w": 22}])

    seedguard.apply(db.url)
    with db.engine().connect() as conn:
        assert conn.execute(sa.select(pairs).order_by("a", "b")).all() == [
            ("x", 1, "uno", 11), ("y", 2, "dos", 22)]
    result = downgrade(db.url, "pairs")

    assert (result.deleted, result.restored, result.reinserted) == (1, 1, 1)
    with db.engine().connect() as conn:
        assert conn.execute(sa.select(pairs).order_by("a", "b")).all() == [
            ("x", 1, "old", 0), ("x", 9, "gone", 9)]
