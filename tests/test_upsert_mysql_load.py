"""MariaDB's bulk path: ``LOAD DATA LOCAL INFILE`` straight into an empty table, through a
temporary table and ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`` otherwise, and the
multi-row VALUES fallback when the client or server refuses it: every value round-trips
(NULLs, binary, unicode, tabs, newlines, backslashes), and a value the server would refuse
fails as it does without the fast path."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase
from conftest import make_database

import seedguard
from seedguard.upsert import mysql as mysql_writer

N = 1200  # past LOAD_THRESHOLD, and more than one batch with batch_size=500

metadata = sa.MetaData()
things = sa.Table(
    "things", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=True),
    sa.Column("label", sa.Unicode(100)),
    sa.Column("note", sa.Text),
    sa.Column("blob", sa.LargeBinary(255)),
    sa.Column("qty", sa.Integer),
    sa.Column("price", sa.Numeric(10, 2)),
    sa.Column("ok", sa.Boolean),
    sa.Column("day", sa.Date),
    sa.Column("at", sa.DateTime),
)
# Only short VARCHARs and integers: the temporary table is a MEMORY one, and
# each line of the file one %-format.
narrow = sa.Table(
    "narrow", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("code", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(100)),
    sa.Column("qty", sa.Integer),
)
serial = sa.Table(
    "serial", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(40), nullable=False, unique=True),
    sa.Column("qty", sa.Integer),
)

AWKWARD = ["tab\there", "new\nline", "back\\slash", "cr\rlf\r\n", "nul\0byte", "\\N",
           "", " spaced ", "quote ' \" `", "emoji \U0001F600 é ß 中文", "\\t literal"]
BLOBS = [b"", b"\x00\x01\x02", b"\t\n\r\\", bytes(range(256))[:255], b"\xff\xfe", None]


def rows(n: int = N, *, tag: str = "") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out.append({
            "id": i + 1,
            "name": None if i % 7 == 0 else f"{AWKWARD[i % len(AWKWARD)]}{tag}{i}",
            "label": AWKWARD[(i + 3) % len(AWKWARD)] + tag,
            "note": None if i % 5 == 0 else AWKWARD[i % len(AWKWARD)] * 3,
            "blob": BLOBS[i % len(BLOBS)],
            "qty": None if i % 11 == 0 else i * (-1 if i % 2 else 1),
            "price": None if i % 13 == 0 else decimal.Decimal(i) / 100,
            "ok": None if i % 17 == 0 else bool(i % 2),
            "day": None if i % 19 == 0 else dt.date(2020, 1, 1) + dt.timedelta(days=i),
            "at": None if i % 23 == 0 else dt.datetime(2021, 5, 6, 7, 8, 9) + dt.timedelta(
                seconds=i),
        })
    return out


@pytest.fixture
def maria(tmp_path: Path) -> Iterator[TestDatabase]:
    yield from make_database("mariadb", tmp_path)


def engine_for(db: TestDatabase, *, local_infile: bool) -> tuple[sa.Engine, list[str]]:
    engine = db.engine(connect_args={"local_infile": local_infile})
    metadata.create_all(engine)
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    return engine, statements


def table_rows(engine: sa.Engine, table: sa.Table = things) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(table.c.id))]


def narrow_rows(ids: range, *, tag: str = "") -> list[dict[str, Any]]:
    return [{"id": i, "code": f"code-{i}", "name": f"name {i}{tag}", "qty": i % 7} for i in ids]


def expected(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # What the database gives back: a Boolean reads back as bool, bytes as bytes.
    return [{**row, "blob": row["blob"]} for row in data]


def loads(statements: list[str]) -> int:
    return sum(s.startswith("LOAD DATA LOCAL INFILE") for s in statements)


def test_fresh_load_goes_straight_in_and_round_trips(maria: TestDatabase) -> None:
    engine, statements = engine_for(maria, local_infile=True)
    data = rows()
    with engine.begin() as conn:
        result = seedguard.upsert(conn, things, data, key="id", batch_size=500)
    assert (result.inserted, result.updated, result.unchanged) == (N, 0, 0)
    assert table_rows(engine) == expected(data)
    # Into the table itself, one per batch of 500; the last 200 rows, below
    # LOAD_THRESHOLD, go through the VALUES statement.
    assert loads(statements) == 2
    assert not any("INSERT INTO" in s and "SELECT" in s for s in statements)
    # Each load's warnings come with its OK packet, not from another query.
    assert not any("@@warning_count" in s for s in statements)


def test_update_goes_through_a_temporary_table_and_round_trips(maria: TestDatabase) -> None:
    engine, statements = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, things, rows(), key="id")
    statements.clear()
    changed = rows(tag="~")  # every row but those whose text columns are all NULL-free alike
    with engine.begin() as conn:
        result = seedguard.upsert(conn, things, changed, key="id", batch_size=600)
    assert result.inserted == 0 and result.updated + result.unchanged == N
    assert result.updated > N * 0.9
    assert table_rows(engine) == expected(changed)
    assert loads(statements) == 2
    # Every row exists and differs: all of them from the temporary table, in one
    # INSERT ... SELECT ... ON DUPLICATE KEY UPDATE per batch.
    assert sum(s.startswith("INSERT INTO") and " SELECT " in s for s in statements) == 2
    assert not any(s.startswith("UPDATE") for s in statements)
    assert any(s.startswith("DROP TEMPORARY TABLE") for s in statements)


def test_a_mixed_batch_writes_only_its_changed_and_missing_rows(maria: TestDatabase) -> None:
    engine, statements = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, narrow, narrow_rows(range(1, 1201)), key="id")
    statements.clear()
    # About 270 unchanged, 530 changed and 400 new rows, interleaved.
    old = [row if row["id"] % 3 == 0 else {**row, "name": f"renamed {row['id']}"}
           for row in narrow_rows(range(1, 801))]
    new = narrow_rows(range(2001, 2401))
    data = [r for trio in zip(old[:400], old[400:], new, strict=True) for r in trio]
    with engine.begin() as conn:
        result = seedguard.upsert(conn, narrow, data, key="id", batch_size=600)
    changed = sum(1 for r in data if r["name"].startswith("renamed"))
    assert (result.inserted, result.updated, result.unchanged) == (400, changed, 800 - changed)
    assert 0 < 800 - changed < changed
    by_id = {r["id"]: r for r in [*narrow_rows(range(1, 1201)), *data]}
    assert table_rows(engine, narrow) == [by_id[i] for i in sorted(by_id)]
    assert sum(s.startswith("CREATE TEMPORARY TABLE") and "ENGINE=MEMORY" in s
               for s in statements) == 1
    # The changed rows by an UPDATE ... JOIN, the missing ones by an INSERT ... SELECT:
    # an unchanged row is not written (no new row version, no trigger).
    assert sum(s.startswith("UPDATE") and "BINARY" in s for s in statements) == 2
    assert sum(s.startswith("INSERT INTO") and "IS NULL" in s for s in statements) == 2
    assert not any("ON DUPLICATE KEY" in s for s in statements)


def test_new_rows_take_their_auto_increment_values_in_the_data_s_order(
        maria: TestDatabase) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, serial, [{"code": f"old-{i}", "qty": i} for i in range(600)],
                         key="code")
    # New codes in an order that is neither the keys' nor the hash's.
    codes = [f"new-{(i * 7919) % 1000:04d}" for i in range(1000)]
    with engine.begin() as conn:
        result = seedguard.upsert(conn, serial, [{"code": c, "qty": 1} for c in codes],
                                  key="code")
    assert result.inserted == 1000
    got = [r["code"] for r in table_rows(engine, serial)]
    assert got[600:] == codes


def test_keys_equal_only_in_the_table_s_collation_keep_the_last_values(
        maria: TestDatabase) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, narrow, narrow_rows(range(1, 1001)), key="code")
    # 'code-5' and 'CODE-5' are one key under the default case-insensitive
    # collation: the rows apply in order, the last one wins (the key's own
    # column is not updated).
    data = narrow_rows(range(1, 1001), tag="~")
    data.append({"id": 5, "code": "CODE-5", "name": "last", "qty": 99})
    with engine.begin() as conn:
        seedguard.upsert(conn, narrow, data, key="code")
    got = table_rows(engine, narrow)
    assert len(got) == 1000
    assert got[4] == {"id": 5, "code": "code-5", "name": "last", "qty": 99}
    assert got[5] == {"id": 6, "code": "code-6", "name": "name 6~", "qty": 6}


def test_a_new_row_that_collides_on_another_unique_key_updates_that_row(
        maria: TestDatabase) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, narrow, narrow_rows(range(1, 1201)), key="id")
    data = narrow_rows(range(1, 1200))
    data.append({"id": 5000, "code": "code-7", "name": "taken over", "qty": 1})
    with engine.begin() as conn:
        result = seedguard.upsert(conn, narrow, data, key="id")
    # As the VALUES statement does: ON DUPLICATE KEY fires on the code's key.
    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 1199)
    got = {r["id"]: r for r in table_rows(engine, narrow)}
    assert 5000 not in got and got[7] == {"id": 7, "code": "code-7", "name": "taken over",
                                          "qty": 1}


def test_a_memory_table_that_fills_up_is_replaced(maria: TestDatabase) -> None:
    engine, statements = engine_for(maria, local_infile=True)
    with engine.begin() as conn:
        seedguard.upsert(conn, narrow, narrow_rows(range(1, 1201)), key="id")
    statements.clear()
    data = narrow_rows(range(1, 1201), tag="~")
    with engine.begin() as conn:
        conn.exec_driver_sql("SET SESSION max_heap_table_size = 16384")  # the least allowed
        result = seedguard.upsert(conn, narrow, data, key="id")
        conn.exec_driver_sql("SET SESSION max_heap_table_size = DEFAULT")
    assert (result.inserted, result.updated) == (0, 1200)
    assert table_rows(engine, narrow) == data
    created = [s for s in statements if s.startswith("CREATE TEMPORARY TABLE")]
    assert len(created) == 2
    assert "ENGINE=MEMORY" in created[0] and "ENGINE=MEMORY" not in created[1]


@pytest.mark.parametrize("path", ["fresh", "update"])
def test_plain_and_awkward_values_round_trip_in_one_file_format(
        maria: TestDatabase, path: str) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    if path == "update":
        with engine.begin() as conn:
            seedguard.upsert(conn, narrow, narrow_rows(range(1, 1801)), key="id")
    data = narrow_rows(range(1, 1801), tag="!")  # batches of 600: the first one plain
    for i, value in enumerate(AWKWARD):
        data[600 + i * 50]["name"] = value  # one a batch would do; several kinds
    data[1300]["name"] = None
    data[1301]["name"] = 12345  # an int for a text column
    data[1302]["qty"] = "77"  # a numeric string for an integer column
    data[1303]["name"] = "None"
    with engine.begin() as conn:
        result = seedguard.upsert(conn, narrow, data, key="id", batch_size=600)
    assert result.inserted + result.updated == 1800
    want = [{**r, "name": None if r["name"] is None else str(r["name"]), "qty": int(r["qty"])}
            for r in data]
    assert table_rows(engine, narrow) == want


def test_refused_load_falls_back_with_one_log_line(
        maria: TestDatabase, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mysql_writer, "_refusal_logged", False)
    engine, statements = engine_for(maria, local_infile=False)  # the client does not allow it
    data = rows()
    with caplog.at_level(logging.INFO, logger="seedguard.upsert.mysql"), engine.begin() as conn:
        result = seedguard.upsert(conn, things, data, key="id", batch_size=500)
        again = seedguard.upsert(conn, things, rows(tag="!"), key="id", batch_size=500)
    assert result.inserted == N and again.updated > N * 0.9
    assert table_rows(engine) == expected(rows(tag="!"))
    refusals = [r for r in caplog.records if "LOAD DATA LOCAL INFILE refused" in r.message]
    assert len(refusals) == 1
    assert "local_infile=1" in refusals[0].getMessage()
    assert loads(statements) == 1  # tried once, then never again on this connection


def test_a_value_the_server_refuses_fails_as_without_the_fast_path(maria: TestDatabase) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    data = rows()
    data[700]["name"] = "x" * 101  # one character too long for VARCHAR(100)
    # LOAD DATA LOCAL would cut it with a warning; the checked load rolls back and the
    # VALUES statement raises the server's error, as a plain INSERT does (strict mode).
    with pytest.raises(sa.exc.DataError, match="Data too long"), engine.begin() as conn:
        seedguard.upsert(conn, things, data, key="id")
    assert table_rows(engine) == []


def test_duplicate_keys_in_the_data_keep_the_last_values(maria: TestDatabase) -> None:
    engine, _ = engine_for(maria, local_infile=True)
    data = rows()
    data[-1] = {**data[0], "name": "last wins"}
    with engine.begin() as conn:
        result = seedguard.upsert(conn, things, data, key="id", batch_size=500)
    assert result.inserted == N - 1
    got = table_rows(engine)
    assert len(got) == N - 1 and got[0]["name"] == "last wins"


def test_a_column_named_like_the_temporary_table_s_row_number(maria: TestDatabase) -> None:
    odd = sa.Table("odd", sa.MetaData(),
                   sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                   sa.Column(mysql_writer._SEQ.upper(), sa.Integer))
    engine, statements = engine_for(maria, local_infile=True)
    odd.create(engine)
    name = mysql_writer._SEQ.upper()
    with engine.begin() as conn:
        seedguard.upsert(conn, odd, [{"id": i, name: i} for i in range(1200)], key="id")
    statements.clear()
    data = [{"id": i, name: -i} for i in range(1200)]
    with engine.begin() as conn:
        result = seedguard.upsert(conn, odd, data, key="id", batch_size=600)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1199, 1)
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.select(odd).order_by(odd.c.id))] == [
            (r["id"], r[name]) for r in data]
    # Through the temporary table, created once.
    assert sum(s.startswith("CREATE TEMPORARY TABLE") for s in statements) == 1
    assert loads(statements) == 2


@pytest.fixture
def maria_no_temporary(maria: TestDatabase) -> Iterator[str]:
    """A URL of ``maria`` for a user who may read and write but not create temporary tables."""
    user = f"sg_notmp_{uuid.uuid4().hex[:8]}"
    name = sa.engine.make_url(maria.url).database
    maria.execute(f"CREATE USER '{user}'@'%'")
    try:
        maria.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name}.* TO '{user}'@'%'")
        yield sa.engine.make_url(maria.url).set(username=user, password="").render_as_string(
            hide_password=False)
    finally:
        maria.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_no_temporary_table_privilege_leaves_the_values_statement(
        maria: TestDatabase, maria_no_temporary: str) -> None:
    owner, _ = engine_for(maria, local_infile=True)
    with owner.begin() as conn:
        seedguard.upsert(conn, narrow, narrow_rows(range(1, 1201)), key="id")
    engine = sa.create_engine(maria_no_temporary, connect_args={"local_infile": True})
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: statements.append(statement))
    data = narrow_rows(range(601, 1801), tag="~")
    try:
        with engine.begin() as conn:
            result = seedguard.upsert(conn, narrow, data, key="id", batch_size=600)
    finally:
        engine.dispose()
    assert (result.inserted, result.updated, result.unchanged) == (600, 600, 0)
    assert table_rows(owner, narrow) == [*narrow_rows(range(1, 601)), *data]
    # Tried for the first batch (MEMORY, then the default engine), then the
    # VALUES statement for every batch.
    created = [s for s in statements if s.startswith("CREATE TEMPORARY TABLE")]
    assert len(created) == 2 and "ENGINE=MEMORY" not in created[1]
    assert sum(s.startswith("INSERT INTO") and "VALUES" in s for s in statements) == 2
