"""The suite every bulk writer must pass, for each registered class on its database.

Parametrised over ``seedguard.upsert.base.WRITERS`` (see :mod:`backends.cases`):
a writer registered for a dialect runs all of it. The contracts, through
``seedguard.upsert`` (which picks the writer by dialect) and on the writer
itself: rows are inserted, updated by key in place, left alone when
unchanged, only inserted with ``update=False``; a row another transaction
inserted after the core looked is updated, not duplicated; values round-trip.
On MariaDB it runs twice: with the client refusing ``LOAD DATA LOCAL INFILE``
(PyMySQL's default, the VALUES statement) and allowing it (``local_infile``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import seedguard
from seedguard import UpsertResult
from seedguard.upsert import PG_COPY_THRESHOLD, resolve_table, writer_for
from seedguard.upsert.base import WRITERS

from .cases import Case, cases, database

metadata = sa.MetaData()
items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(200)),
    sa.Column("qty", sa.Integer),
)
prices = sa.Table(
    "prices", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("region", sa.String(10), nullable=False),
    sa.Column("sku", sa.String(20), nullable=False),
    sa.Column("amount", sa.Numeric(10, 2)),
    sa.UniqueConstraint("region", "sku"),
)
refs = sa.Table(
    "refs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
)
typed = sa.Table(
    "typed", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.String(100)),
    sa.Column("price", sa.Numeric(12, 3)),
    sa.Column("day", sa.Date),
    sa.Column("at", sa.DateTime),
    sa.Column("flag", sa.Boolean),
    sa.Column("ratio", sa.Float),
)

# MariaDB twice: the file-loading path is a second way to write the same rows.
WRITER_CASES = [*cases(WRITERS), *(dataclasses.replace(case, mode="local_infile")
                                   for case in cases(WRITERS) if case.kind == "mariadb")]


@pytest.fixture(params=WRITER_CASES, ids=[case.id for case in WRITER_CASES])
def writer_case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def engine(writer_case: Case, tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine on a fresh database of the case's kind, with the tables above."""
    for db in database(writer_case, tmp_path):
        engine = db.engine(**({"connect_args": {"local_infile": True}}
                              if writer_case.mode == "local_infile" else {}))
        metadata.create_all(engine)
        yield engine


def run(engine: sa.Engine, table: Any, rows: list[dict[str, Any]], **kwargs: Any) -> UpsertResult:
    with engine.begin() as conn:
        return seedguard.upsert(conn, table, rows, **kwargs)


def content(engine: sa.Engine, table: sa.Table, *cols: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        order = [table.c[c] for c in cols]
        return [tuple(r) for r in conn.execute(sa.select(*order).order_by(*order))]


def rows_of(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"code": f"c{i:05d}", "name": f"item {i}", "qty": i, **extra} for i in range(n)]


def test_the_registered_writer_is_the_one_used(writer_case: Case, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        writer = writer_for(conn, resolve_table(conn, items), ("code",), ("code", "name"),
                            ("name",))
    assert type(writer) is writer_case.cls


def test_inserts_then_rerun_changes_nothing(engine: sa.Engine) -> None:
    first = run(engine, items, rows_of(10), key="code")
    again = run(engine, items, rows_of(10), key="code")

    assert (first.inserted, first.updated, first.unchanged) == (10, 0, 0)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10)
    assert content(engine, items, "code", "qty") == [(f"c{i:05d}", i) for i in range(10)]


def test_update_in_place_keeps_primary_keys_and_references(engine: sa.Engine) -> None:
    run(engine, items, rows_of(3), key="code")
    ids_before = content(engine, items, "code", "id")
    with engine.begin() as conn:
        conn.execute(refs.insert(), [{"item_id": i} for _, i in ids_before])
    changed = rows_of(3)
    changed[1]["name"] = "renamed"

    result = run(engine, items, [*changed, {"code": "new", "name": "n", "qty": 9}], key="code")

    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 2)
    assert content(engine, items, "code", "id")[:3] == ids_before
    assert ("c00001", "renamed") in content(engine, items, "code", "name")
    assert len(content(engine, refs, "item_id")) == 3


@pytest.mark.parametrize("size", [3, 600])  # 600: the file path on MariaDB
def test_update_false_only_inserts_missing(engine: sa.Engine, size: int) -> None:
    run(engine, items, rows_of(size - 1), key="code")
    changed = rows_of(size, name="other")

    result = run(engine, items, changed, key="code", update=False)

    assert (result.inserted, result.updated, result.unchanged) == (1, 0, size - 1)
    assert content(engine, items, "code", "name") == [
        *((f"c{i:05d}", f"item {i}") for i in range(size - 1)), (f"c{size - 1:05d}", "other")]


@pytest.mark.parametrize("update", [True, False], ids=["update", "insert-only"])
# PG_COPY_THRESHOLD * 2: the COPY path on PostgreSQL; 600: the file path on MariaDB.
@pytest.mark.parametrize("size", [3, PG_COPY_THRESHOLD * 2, 600])
def test_a_row_inserted_since_the_core_looked_is_updated_not_duplicated(
        engine: sa.Engine, update: bool, size: int) -> None:
    rows = rows_of(size)
    theirs = {"code": rows[1]["code"], "name": "theirs", "qty": -1}
    with engine.begin() as conn:  # another applier's row, committed after the core looked
        conn.execute(items.insert(), [theirs])
    with engine.begin() as conn:
        writer = writer_for(conn, resolve_table(conn, items), ("code",), ("code", "name", "qty"),
                            ("name", "qty") if update else ())
        writer.write(rows, all_new=True)  # the core saw none of these keys
        writer.finish()
    expected = [(r["code"], r["name"], r["qty"]) for r in rows]
    if not update:
        expected[1] = (theirs["code"], theirs["name"], theirs["qty"])
    assert content(engine, items, "code", "name", "qty") == expected


def _typed_rows(n: int) -> list[dict[str, Any]]:
    awkward = ["plain", "tab\there", "new\nline", "back\\slash", "", None, "quote \"'", "é ü"]
    return [{"id": i, "label": awkward[i % len(awkward)],
             "price": decimal.Decimal(i) / 8,
             "day": dt.date(2024, 1, 1) + dt.timedelta(days=i % 300),
             "at": dt.datetime(2024, 1, 1, 12, 30, 15) + dt.timedelta(minutes=i),
             "flag": [True, False, None][i % 3], "ratio": i / 4}
            for i in range(n)]


@pytest.mark.parametrize("size", [10, 2500])  # 2500: above the COPY threshold on PostgreSQL
def test_values_round_trip(engine: sa.Engine, size: int) -> None:
    rows = _typed_rows(size)
    cols = ("id", "label", "price", "day", "at", "flag", "ratio")

    first = run(engine, typed, rows, key="id")
    again = run(engine, typed, rows, key="id")

    assert first.inserted == size
    assert again.unchanged == size  # every value compared equal after the round trip
    expected = [tuple(r[c] for c in cols) for r in rows]
    assert content(engine, typed, *cols) == expected
