"""MariaDB's bulk path: ``LOAD DATA LOCAL INFILE`` straight into an empty table, through a
temporary table and ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`` otherwise, and the
multi-row VALUES fallback when the client or server refuses it: every value round-trips
(NULLs, binary, unicode, tabs, newlines, backslashes), and a value the server would refuse
fails as it does without the fast path."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
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


def table_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(things).order_by(things.c.id))]


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
    assert sum(s.startswith("INSERT INTO") and " SELECT " in s for s in statements) == 2
    assert any(s.startswith("DROP TEMPORARY TABLE") for s in statements)


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
