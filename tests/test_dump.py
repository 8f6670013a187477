"""`seedguard dump` on each database: files that data_dir applies back as a no-op on the
same database and that reproduce the rows by natural key on a fresh one (foreign keys
through refs), in each format; bad input refused before any file is written."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase
from click.testing import CliRunner
from conftest import make_database

import seedguard
import seedguard.dump as dump_module
from seedguard.cli import cli
from seedguard.dump import dump
from seedguard.errors import ConfigError
from seedguard.registry import default_registry

metadata = sa.MetaData()
roles = sa.Table(
    "roles", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("level", sa.Integer, nullable=False),
)
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(100), nullable=False, unique=True),
    sa.Column("role_id", sa.Integer, sa.ForeignKey("roles.id")),
    sa.Column("score", sa.Numeric(10, 2)),
    sa.Column("joined", sa.Date),
    sa.Column("seen", sa.DateTime),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("bio", sa.Text),
    sa.Column("avatar", sa.LargeBinary),
)
notes = sa.Table(  # no unique key besides its id
    "notes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("body", sa.String(50)),
)

ROLES = [{"name": "admin", "level": 9}, {"name": "user", "level": 1},
         {"name": "guest", "level": 0}]
USERS = [
    {"email": "ann@x.org", "role": "admin", "score": decimal.Decimal("12.50"),
     "joined": dt.date(2020, 1, 2), "seen": dt.datetime(2024, 5, 6, 7, 8, 9), "active": True,
     "bio": "line one\nline \"two\", with comma", "avatar": b"\x00\xffpng"},
    {"email": "bob@x.org", "role": "user", "score": None, "joined": None, "seen": None,
     "active": False, "bio": "", "avatar": None},
    {"email": "cy@x.org", "role": None, "score": decimal.Decimal("-0.01"),
     "joined": dt.date(1999, 12, 31), "seen": None, "active": True, "bio": "ünïcode ✓",
     "avatar": b""},
]


def fill(engine: sa.Engine, *, shift: bool = False) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        if shift:  # other ids than the dumped database's
            conn.execute(roles.insert(), [{"name": "zzz", "level": 5}])
            conn.execute(roles.delete().where(roles.c.name == "zzz"))
        conn.execute(roles.insert(), ROLES)
        ids = dict(conn.execute(sa.select(roles.c.name, roles.c.id)).all())
        conn.execute(users.insert(), [
            {k: v for k, v in u.items() if k != "role"} | {"role_id": ids.get(u["role"])}
            for u in USERS])


def content(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """Users by natural key, their role by name: what must survive a dump."""
    query = (sa.select(users.c.email, roles.c.name, roles.c.level, users.c.score,
                       users.c.joined, users.c.seen, users.c.active, users.c.bio,
                       users.c.avatar)
             .select_from(users.outerjoin(roles, users.c.role_id == roles.c.id))
             .order_by(users.c.email))
    with engine.connect() as conn:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in conn.execute(query)]


@pytest.fixture
def engine(db: TestDatabase) -> Iterator[sa.Engine]:
    engine = db.engine()
    fill(engine)
    yield engine


@pytest.fixture
def fresh(db: TestDatabase, tmp_path: Path) -> Iterator[TestDatabase]:
    """A second, empty database of the same kind."""
    other = tmp_path / "fresh"
    other.mkdir()
    yield from make_database(db.kind, other)


KEYS = {"roles": "name", "users": "email"}
REFS = {"role_id": ("roles", "name")}


def apply_dir(url: str, out: Path, **options: Any) -> seedguard.ApplyResult:
    default_registry.clear()
    units = seedguard.data_dir(out, keys=KEYS, refs={"users": REFS})
    return seedguard.apply(url, seeds=units, **options)


@pytest.mark.parametrize("fmt", ["json", "csv", "yaml"])
def test_dump_applies_back_as_a_no_op_and_reproduces_rows_on_a_fresh_database(
        db: TestDatabase, engine: sa.Engine, fresh: TestDatabase, fmt: str) -> None:
    if fmt == "csv":
        with engine.begin() as conn:  # CSV cannot hold a NULL text
            conn.execute(users.update().values(bio=sa.func.coalesce(users.c.bio, "")))
    out = db.tmp_path / "dumped"
    before = content(engine)
    with engine.connect() as conn:
        ids = conn.execute(sa.select(users.c.email, users.c.id)).all()

    result = dump(db.url, ["roles", "users"], key=KEYS, refs=REFS, format=fmt, out=out)

    assert sorted(p.name for p in out.iterdir()) == [f"roles.{fmt}", f"users.{fmt}"]
    assert [(f.table, f.rows) for f in result.files] == [("roles", 3), ("users", 3)]
    assert result.warnings == []
    # The same database: nothing would change, and applying changes nothing.
    preview = apply_dir(db.url, out, dry_run=True)
    assert {name: (p.inserted, p.updated, p.deleted) for name, p in preview.previews.items()} \
        == {"roles": (0, 0, 0), "users": (0, 0, 0)}
    assert [u.name for u in apply_dir(db.url, out).applied] == ["roles", "users"]
    assert content(engine) == before
    with engine.connect() as conn:
        assert conn.execute(sa.select(users.c.email, users.c.id)).all() == ids
    # A fresh database with the same schema (and other ids): the same rows by key.
    fresh_engine = fresh.engine()
    metadata.create_all(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(roles.insert(), [{"name": "zzz", "level": 5}])
    apply_dir(fresh.url, out)
    with fresh_engine.begin() as conn:
        conn.execute(roles.delete().where(roles.c.name == "zzz"))
    assert content(fresh_engine) == before


def test_dump_writes_nulls_and_values_as_data_seeds_read_them(
        db: TestDatabase, engine: sa.Engine) -> None:
    out = db.tmp_path / "dumped"
    dump(db.url, ["users"], key="email", refs={"users.role_id": ("roles", "name")}, out=out)

    records = json.loads((out / "users.json").read_text(encoding="utf-8"))

    assert "id" not in records[0]  # the fresh database numbers its rows itself
    assert records[0] == {
        "email": "ann@x.org", "role_id": "admin", "score": "12.50", "joined": "2020-01-02",
        "seen": "2024-05-06T07:08:09", "active": True,
        "bio": "line one\nline \"two\", with comma", "avatar": "00ff706e67"}
    assert records[2]["role_id"] is None


def test_where_and_partitions(db: TestDatabase, engine: sa.Engine,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dump_module, "BATCH", 1)
    seen: list[tuple[str, int, int | None]] = []
    out = db.tmp_path / "dumped"

    dump(db.url, ["roles"], key="name", out=out, where="level > 0",
         progress=lambda *args: seen.append(args))

    names = [r["name"] for r in json.loads((out / "roles.json").read_text())]
    assert names == ["admin", "user"]  # ordered by the key
    assert seen == [("roles", 1, 2), ("roles", 2, 2)]


def test_foreign_key_without_refs_is_a_warning(db: TestDatabase, engine: sa.Engine) -> None:
    result = dump(db.url, ["users"], key="email", out=db.tmp_path / "dumped")
    assert len(result.warnings) == 1
    assert "users.role_id is a foreign key to roles.id" in result.warnings[0]
    assert "--refs role_id=roles.KEY" in result.warnings[0]


@pytest.mark.parametrize(("tables", "options", "message"), [
    (["users"], {"key": "name"}, r"table users has no column 'name' for its key"),
    (["notes"], {"key": "body"}, r"no primary key or unique constraint"),
    (["users", "missing"], {"key": "email"}, r"no table 'missing'"),
    (["users"], {"key": "email", "refs": {"role_id": ("nowhere", "name")}},
     r"--refs role_id: no table 'nowhere'"),
    (["users"], {"key": "email", "refs": {"role_id": ("roles", "title")}},
     r"table roles has no column 'title'"),
    (["roles"], {"key": "name", "refs": {"role_id": ("roles", "name")}},
     r"no dumped table has column 'role_id'"),
    (["roles"], {"key": "name", "format": "xml"}, r"unknown format 'xml'"),
])
def test_bad_input_is_a_config_error_before_any_file_is_written(
        db: TestDatabase, engine: sa.Engine, tables: list[str], options: dict[str, Any],
        message: str) -> None:
    out = db.tmp_path / "dumped"
    with pytest.raises(ConfigError, match=message):
        dump(db.url, tables, out=out, **options)
    assert not out.exists()


def test_csv_refuses_a_null_text_and_leaves_no_file(db: TestDatabase,
                                                    engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(users.update().where(users.c.email == "bob@x.org").values(bio=None))
    out = db.tmp_path / "dumped"

    with pytest.raises(ConfigError, match=r"users\.bio holds NULL.*--format json or yaml"):
        dump(db.url, ["users"], key="email", refs=REFS, format="csv", out=out)

    assert list(out.iterdir()) == []


def test_cli_dump(db: TestDatabase, engine: sa.Engine) -> None:
    out = db.tmp_path / "dumped"
    runner = CliRunner()
    done = runner.invoke(cli, ["--url", db.url, "dump", "roles", "users", "--key", "roles=name",
                               "--key", "users=email", "--refs", "role_id=roles.name",
                               "--out", str(out), "--format", "yaml"], catch_exceptions=False)
    document = runner.invoke(cli, ["--url", db.url, "dump", "roles", "--key", "name",
                                   "--out", str(out / "j"), "--json"], catch_exceptions=False)
    bad = runner.invoke(cli, ["--url", db.url, "dump", "users", "--key", "nope",
                              "--out", str(out / "bad")], catch_exceptions=False)

    assert done.exit_code == 0, done.output
    assert f"wrote {out / 'users.yaml'} (3 rows)" in done.stdout
    assert "apply them with: seedguard.data_dir(" in done.stdout
    assert "dumping users: 3/3 rows" in done.stderr
    assert document.exit_code == 0 and json.loads(document.stdout)["files"] == [
        {"table": "roles", "path": str(out / "j" / "roles.json"), "rows": 3}]
    assert bad.exit_code == 2 and "has no column 'nope'" in bad.stderr
    assert not (out / "bad").exists()


def test_postgresql_dumps_through_copy_with_values_as_the_stream_writes_them(
        pg: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    # The COPY path writes what the streamed path writes, value for value: text with
    # every character COPY escapes, a json column as typed (raw newlines), numbers.
    odd = sa.Table(
        "odd", sa.MetaData(),
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("note", sa.Text), sa.Column("doc", sa.JSON),
        sa.Column("price", sa.Numeric(10, 3)), sa.Column("ratio", sa.Float),
        sa.Column("at", sa.DateTime(timezone=True)), sa.Column("raw", sa.LargeBinary))
    engine = pg.engine()
    odd.create(engine)
    with engine.begin() as conn:
        conn.execute(odd.insert(), [
            {"code": "a", "note": "back\\slash\ttab\nnew\rcr\b\f\v \"q\" ünï",
             "doc": {"k": [1, "x\\y"]}, "price": decimal.Decimal("1.500"), "ratio": 0.1,
             "at": dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
             "raw": b"\x00\\"},
            {"code": "b", "note": None, "doc": None, "price": None, "ratio": None,
             "at": None, "raw": None}])
        conn.execute(sa.text("UPDATE odd SET doc = CAST(:d AS json) WHERE code = 'b'"),
                     {"d": '{\n  "spaced":\t"out"\n}'})
    via_copy = pg.tmp_path / "copy"
    streamed = pg.tmp_path / "streamed"

    dump(pg.url, ["odd"], key="code", out=via_copy)
    monkeypatch.setattr(dump_module.Exporter, "json_records", lambda self, conn, plan: None)
    dump(pg.url, ["odd"], key="code", out=streamed)

    text = (via_copy / "odd.json").read_text(encoding="utf-8")
    assert '{"code":"a",' in text  # the server's row_to_json wrote it
    copied = json.loads(text)
    assert copied == json.loads((streamed / "odd.json").read_text(encoding="utf-8"))
    assert copied[0]["note"] == "back\\slash\ttab\nnew\rcr\b\f\v \"q\" ünï"
    assert copied[0]["price"] == "1.500" and copied[1]["doc"] == {"spaced": "out"}


def test_postgresql_copy_leaves_unknown_types_to_the_stream(pg: TestDatabase) -> None:
    from sqlalchemy.dialects import postgresql

    from seedguard.dump_postgresql import PostgresExporter

    tags = sa.Table("tags", sa.MetaData(), sa.Column("code", sa.String(5), primary_key=True),
                    sa.Column("words", postgresql.ARRAY(sa.Text)))
    engine = pg.engine()
    tags.create(engine)
    with engine.begin() as conn:
        conn.execute(tags.insert(), [{"code": "a", "words": ["x", "y"]}])

    with engine.connect() as conn:
        plan = dump_module._Plan.make(conn, "tags", "code", {}, None)
        assert PostgresExporter().json_records(conn, plan) is None
    dump(pg.url, ["tags"], key="code", out=pg.tmp_path / "out")
    assert json.loads((pg.tmp_path / "out" / "tags.json").read_text()) == [
        {"code": "a", "words": ["x", "y"]}]
