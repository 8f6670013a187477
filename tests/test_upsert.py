"""seedguard.upsert on each database, beyond what every writer proves in the shared suite
(tests/backends/writer_suite.py: insert, update by key, insert-only, rows inserted
concurrently, values round-trip): update=[cols], unchanged rows left alone, composite
keys, key checks, the COPY path, sequence repair."""

from __future__ import annotations

import decimal
import enum
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase

# The tables and helpers the shared bulk-writer suite and these tests have in common.
from backends.writer_suite import content, items, metadata, prices, rows_of, run
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import seedguard
from seedguard import DataError, UpsertResult
from seedguard.upsert import PG_COPY_THRESHOLD, Upserter, batches, resolve_table
from seedguard.upsert import core as upsert_core


class Base(DeclarativeBase):
    pass


class Role(Base):
    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    level: Mapped[int] = mapped_column(default=0)


@pytest.fixture
def engine(db: TestDatabase) -> Iterator[sa.Engine]:
    engine = db.engine()
    metadata.create_all(engine)
    Base.metadata.create_all(engine)
    yield engine


def test_update_columns_updates_only_those(engine: sa.Engine) -> None:
    run(engine, items, rows_of(2), key="code")
    changed = [{"code": "c00000", "name": "new name", "qty": 100},
               {"code": "c00001", "name": "item 1", "qty": 1}]

    result = run(engine, items, changed, key="code", update=["qty"])
    name_only = run(engine, items, [{"code": "c00001", "name": "x", "qty": 1}], key="code",
                    update=["qty"])

    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    assert (name_only.updated, name_only.unchanged) == (0, 1)  # name differs, not compared
    assert content(engine, items, "code", "name", "qty") == [
        ("c00000", "item 0", 100), ("c00001", "item 1", 1)]


def _touch_log(db: TestDatabase, engine: sa.Engine) -> None:
    """A trigger that records every UPDATE of items (SQLite and MariaDB)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE touched (code VARCHAR(40))")
        if db.kind == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER items_touched AFTER UPDATE ON items FOR EACH ROW "
                                 "BEGIN INSERT INTO touched VALUES (NEW.code); END")
        else:
            conn.exec_driver_sql("CREATE TRIGGER items_touched AFTER UPDATE ON items FOR EACH ROW "
                                 "INSERT INTO touched VALUES (NEW.code)")


def test_unchanged_rows_are_not_rewritten(db: TestDatabase, engine: sa.Engine) -> None:
    run(engine, items, rows_of(20), key="code")
    if db.kind == "postgresql":
        # A rewritten row gets a new row version: xmin changes.
        def versions() -> list[Any]:
            with engine.connect() as conn:
                query = sa.text("SELECT code, xmin::text FROM items ORDER BY code")
                return list(conn.execute(query))
    else:
        _touch_log(db, engine)

        def versions() -> list[Any]:
            return db.execute("SELECT code FROM touched ORDER BY code")
    before = versions()
    changed = rows_of(20)
    changed[7]["qty"] = -1

    result = run(engine, items, changed, key="code")

    after = versions()
    assert (result.updated, result.unchanged) == (1, 19)
    if db.kind == "postgresql":
        assert [a for a, b in zip(after, before, strict=True) if a != b] == [after[7]]
    else:
        assert [tuple(r) for r in after] == [("c00007",)]


def test_composite_key(engine: sa.Engine) -> None:
    rows = [{"region": "eu", "sku": "a", "amount": decimal.Decimal("1.50")},
            {"region": "us", "sku": "a", "amount": decimal.Decimal("2.00")}]
    run(engine, prices, rows, key=["region", "sku"])
    rows[1]["amount"] = decimal.Decimal("3.25")

    result = run(engine, prices, [*rows, {"region": "eu", "sku": "b", "amount": None}],
                 key=("sku", "region"))

    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    assert content(engine, prices, "region", "sku", "amount") == [
        ("eu", "a", decimal.Decimal("1.50")), ("eu", "b", None),
        ("us", "a", decimal.Decimal("3.25"))]


def test_key_without_unique_constraint_is_rejected(engine: sa.Engine) -> None:
    with pytest.raises(DataError, match=r"key \(name\) of table items is not backed by a primary "
                                        r"key or unique constraint.*\(code; id\)"):
        run(engine, items, rows_of(1), key="name")
    with pytest.raises(DataError, match=r"key \(region\) of table prices is not backed"):
        run(engine, prices, [{"region": "eu", "sku": "a"}], key="region")
    with pytest.raises(DataError, match="'nope' is not a column of table items"):
        run(engine, items, rows_of(1), key="nope")
    assert content(engine, items, "code") == []


def test_bad_rows_are_rejected(engine: sa.Engine) -> None:
    with pytest.raises(DataError, match="'colour' is not a column of table items"):
        run(engine, items, [{"code": "a", "colour": "red"}], key="code")
    with pytest.raises(DataError, match="row 2 has columns"):
        run(engine, items, [{"code": "a", "qty": 1}, {"code": "b"}], key="code")
    with pytest.raises(DataError, match="update column 'qty'"):
        run(engine, items, [{"code": "a", "name": "x"}], key="code", update=["qty"])


def test_orm_model_session_and_reflected_table_name(engine: sa.Engine) -> None:
    with Session(engine) as session:
        first = seedguard.upsert(session, Role, [{"name": "admin", "level": 9},
                                                 {"name": "user", "level": 1}], key="name")
        session.commit()
    with engine.begin() as conn:
        by_name = seedguard.upsert(conn, "roles", [{"name": "admin", "level": 10}], key="name")

    assert first.inserted == 2
    assert (by_name.updated, by_name.inserted) == (1, 0)
    with Session(engine) as session:
        assert {r.name: r.level for r in session.scalars(sa.select(Role))} == {
            "admin": 10, "user": 1}


def test_missing_table_name_says_so(engine: sa.Engine) -> None:
    with pytest.raises(DataError, match="table 'nowhere' does not exist"):
        run(engine, "nowhere", [{"a": 1}], key="a")


def test_rollback_takes_the_upsert_with_it(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        seedguard.upsert(conn, items, rows_of(3), key="code")
        conn.rollback()
    assert content(engine, items, "code") == []


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
@pytest.mark.parametrize("size", [5, 3000])
def test_postgresql_sequence_moves_past_seeded_ids(pg: TestDatabase, driver: str,
                                                   size: int) -> None:
    url = sa.engine.make_url(pg.url).set(drivername=f"postgresql+{driver}")
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        rows = [{"id": i + 1, **r} for i, r in enumerate(rows_of(size))]
        run(engine, items, rows, key="code")
        with engine.begin() as conn:
            new_id = conn.execute(items.insert().values(code="plain", name="no id")
                                  .returning(items.c.id)).scalar()
        assert new_id == size + 1
        # An upsert with smaller ids never moves the sequence back.
        run(engine, items, [{"id": 1, "code": "c00000", "name": "again", "qty": 0}], key="code")
        with engine.begin() as conn:
            assert conn.execute(items.insert().values(code="plain2")
                                .returning(items.c.id)).scalar() == size + 2
        assert len(content(engine, items, "code")) == size + 2
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_copy_path_updates_and_counts(pg: TestDatabase, driver: str) -> None:
    url = sa.engine.make_url(pg.url).set(drivername=f"postgresql+{driver}")
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        size = PG_COPY_THRESHOLD * 2
        run(engine, items, rows_of(size), key="code")
        changed = rows_of(size + 10, name="renamed")

        result = run(engine, items, changed, key="code")

        assert (result.inserted, result.updated, result.unchanged) == (10, size, 0)
        names = {name for _, name in content(engine, items, "code", "name")}
        assert names == {"renamed"}
        with engine.connect() as conn:  # the temporary table is gone
            assert not conn.execute(sa.text(
                "SELECT count(*) FROM pg_class WHERE relname LIKE '\\_sg\\_upsert\\_%'")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_initial_load_with_a_key_repeated_across_batches(pg: TestDatabase,
                                                                    driver: str) -> None:
    url = sa.engine.make_url(pg.url).set(drivername=f"postgresql+{driver}")
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        rows = rows_of(300)
        rows.append({"code": "c00010", "name": "last wins", "qty": -1})
        with engine.begin() as conn:
            seedguard.upsert(conn, items, rows, key="code", batch_size=PG_COPY_THRESHOLD * 2)
        assert len(content(engine, items, "code")) == 300
        assert ("c00010", "last wins", -1) in content(engine, items, "code", "name", "qty")
    finally:
        engine.dispose()


class Colour(enum.Enum):
    red = "red"
    blue = "blue"


paints = sa.Table(
    "paints", sa.MetaData(),
    sa.Column("code", sa.String(20), primary_key=True),
    sa.Column("colour", sa.Enum(Colour)),
)


def test_enum_column_and_composite_key_in_large_batches(db: TestDatabase,
                                                        engine: sa.Engine) -> None:
    paints.create(engine)
    size = PG_COPY_THRESHOLD * 3  # the COPY paths on PostgreSQL, where they apply
    colours = [{"code": f"p{i}", "colour": [Colour.red, Colour.blue][i % 2]} for i in range(size)]
    price_rows = [{"region": f"r{i % 3}", "sku": f"s{i}", "amount": decimal.Decimal(i)}
                  for i in range(size)]
    run(engine, paints, colours, key="code")
    run(engine, prices, price_rows, key=["region", "sku"])
    for row in price_rows[::2]:
        row["amount"] += 1
    colours[0]["colour"] = Colour.blue

    paint_result = run(engine, paints, colours, key="code")
    price_result = run(engine, prices, price_rows, key=["region", "sku"])

    assert (paint_result.updated, paint_result.unchanged) == (1, size - 1)
    assert (price_result.updated, price_result.unchanged) == (size - size // 2, size // 2)
    assert content(engine, paints, "code", "colour")[0] == ("p0", Colour.blue)
    assert sum(a for _, _, a in content(engine, prices, "region", "sku", "amount")) == sum(
        r["amount"] for r in price_rows)


def test_update_false_in_large_batches_only_inserts(engine: sa.Engine) -> None:
    size = PG_COPY_THRESHOLD * 2
    run(engine, items, rows_of(size), key="code")

    result = run(engine, items, rows_of(size + PG_COPY_THRESHOLD, name="other"), key="code",
                 update=False)

    assert (result.inserted, result.updated, result.unchanged) == (PG_COPY_THRESHOLD, 0, size)
    names = [name for _, name in content(engine, items, "code", "name")]
    assert names.count("other") == PG_COPY_THRESHOLD


def _with_repeats(n: int) -> list[dict[str, Any]]:
    """``n`` rows and three repeated keys: 10 rows apart, at the end with the same values,
    and at the end with other values."""
    rows = rows_of(n)
    rows.insert(15, {"code": "c00005", "name": "second", "qty": -5})
    rows.append({"code": "c00005", "name": "second", "qty": -5})
    rows.append({"code": "c00012", "name": "third", "qty": -12})
    return rows


@pytest.mark.parametrize(("n", "batch_size"), [(20, 5000), (20, 3), (300, PG_COPY_THRESHOLD * 2)])
@pytest.mark.parametrize("path", ["empty table", "look-up", "snapshot"])
# The keys an empty-table load wrote: in a set, or past SEEN_MAX (4 here) as hashes.
@pytest.mark.parametrize("seen_max", [upsert_core.SEEN_MAX, 4], ids=["exact", "hashed"])
def test_a_repeated_key_follows_one_rule_wherever_the_batches_split(
        engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, n: int, batch_size: int,
        path: str, seen_max: int) -> None:
    # The rule: rows apply in order, the last values win, and each copy of a
    # key counts against the values before it, in a batch or across batches.
    monkeypatch.setattr(upsert_core, "SEEN_MAX", seen_max)
    prefilled = 0 if path == "empty table" else 3
    if prefilled:
        run(engine, items, rows_of(prefilled), key="code")
    if path == "snapshot":
        monkeypatch.setattr(upsert_core, "SNAPSHOT_MIN", 1)
    rows = _with_repeats(n)

    with engine.connect() as conn:
        preview = Upserter(conn, resolve_table(conn, items), "code", dry_run=True,
                           expected=len(rows))
        for batch in batches(rows, batch_size):
            preview.write(batch)
    with engine.begin() as conn:
        result = seedguard.upsert(conn, items, rows, key="code", batch_size=batch_size)

    expected = UpsertResult(inserted=n - prefilled, updated=2, unchanged=1 + prefilled)
    assert (result, preview.result) == (expected, expected)
    stored = {code: (name, qty) for code, name, qty in content(engine, items, "code", "name",
                                                              "qty")}
    assert len(stored) == n
    assert (stored["c00005"], stored["c00012"]) == (("second", -5), ("third", -12))


def test_enum_column_fed_strings_compares_equal_to_its_members(engine: sa.Engine) -> None:
    paints.create(engine)
    size = PG_COPY_THRESHOLD * 2
    rows = [{"code": f"p{i}", "colour": ["red", "blue"][i % 2]} for i in range(size)]
    members = [{"code": f"p{i}", "colour": [Colour.red, Colour.blue][i % 2]} for i in range(size)]

    first = run(engine, paints, rows, key="code")
    again = run(engine, paints, rows, key="code")
    mixed = run(engine, paints, members, key="code")
    rows[0]["colour"] = "blue"
    changed = run(engine, paints, rows, key="code")

    assert first.inserted == size
    assert (again.updated, again.unchanged) == (0, size)
    assert (mixed.updated, mixed.unchanged) == (0, size)
    assert (changed.updated, changed.unchanged) == (1, size - 1)
    assert content(engine, paints, "code", "colour")[:2] == [("p0", Colour.blue),
                                                             ("p1", Colour.blue)]


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_initial_load_without_the_lock_privilege_merges(pg: TestDatabase,
                                                                   driver: str) -> None:
    # LOCK TABLE ... SHARE ROW EXCLUSIVE needs table-level UPDATE, DELETE or
    # TRUNCATE; a role that may only insert and update some columns upserts
    # fine, so the direct COPY must fall back to the merge.
    admin = pg.engine()
    metadata.create_all(admin)
    role = f"sg_nolock_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    engine: sa.Engine | None = None
    try:
        pg.execute(f"GRANT SELECT, INSERT ON items TO {role}")
        pg.execute(f"GRANT UPDATE (name, qty) ON items TO {role}")
        pg.execute(f"GRANT USAGE ON SEQUENCE items_id_seq TO {role}")
        url = sa.engine.make_url(pg.url).set(drivername=f"postgresql+{driver}", username=role)
        engine = sa.create_engine(url)
        size = PG_COPY_THRESHOLD * 2

        first = run(engine, items, rows_of(size), key="code")
        again = run(engine, items, rows_of(size, name="renamed"), key="code")

        assert (first.inserted, again.updated) == (size, size)
        assert {name for _, name in content(admin, items, "code", "name")} == {"renamed"}
    finally:
        if engine is not None:
            engine.dispose()
        pg.dispose()
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("seen_max", [upsert_core.SEEN_MAX, 0], ids=["exact", "hashed"])
def test_a_long_dry_run_keeps_bounded_memory_for_repeated_keys(
        engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, seen_max: int) -> None:
    monkeypatch.setattr(upsert_core, "OVERLAY_MAX", 5)
    monkeypatch.setattr(upsert_core, "SEEN_MAX", seen_max)
    rows = _with_repeats(300)
    with engine.connect() as conn:
        preview = Upserter(conn, resolve_table(conn, items), "code", dry_run=True)
        for batch in batches(rows, 50):
            preview.write(batch)

    # Past the bound, an earlier batch's values are unknown: the repeat with
    # the same values counts as updated. Every row is still counted once.
    assert preview.result.total == len(rows)
    assert preview.result.inserted >= 300 - 3  # a false bitmap hit may count as updated
    assert preview._overlay is not None and len(preview._overlay) <= 5
    assert (preview._seen is None) == (seen_max == 0)
