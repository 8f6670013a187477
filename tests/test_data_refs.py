"""Data seeds that reference each other by natural key (refs=), YAML files and data_dir,
on each database: resolution from CSV/JSON/YAML, implicit ordering, unknown references
with file/line/column, models as targets, composite keys, prune, dry runs."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit, write_module
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import seedguard
from seedguard import DataError, DefinitionError, UpsertResult
from seedguard.registry import order, with_dependencies


class Base(DeclarativeBase):
    pass


class Role(Base):
    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role_id: Mapped[int | None] = mapped_column(sa.ForeignKey("roles.id"))


class Region(Base):
    __tablename__ = "regions"
    id: Mapped[int] = mapped_column(primary_key=True)
    country: Mapped[str] = mapped_column(sa.String(2))
    code: Mapped[str] = mapped_column(sa.String(10))
    name: Mapped[str] = mapped_column(sa.String(100))
    __table_args__ = (sa.UniqueConstraint("country", "code"),)


class City(Base):
    __tablename__ = "cities"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    region_id: Mapped[int] = mapped_column(sa.ForeignKey("regions.id"))


# A reference without a foreign key: the target's primary key is written.
notes = sa.Table(
    "notes", Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(50), unique=True),
    sa.Column("author", sa.Integer),
)

ROLES = "name\nadmin\neditor\nviewer\n"
USERS_CSV = "email,role_id\nann@x.org,admin\nbob@x.org,viewer\ncid@x.org,\n"
USERS = [{"email": "ann@x.org", "role_id": "admin"}, {"email": "bob@x.org", "role_id": "viewer"},
         {"email": "cid@x.org", "role_id": None}]


@pytest.fixture
def engine(db: TestDatabase) -> Iterator[sa.Engine]:
    engine = db.engine()
    Base.metadata.create_all(engine)
    yield engine


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def users_file(directory: Path, kind: str, rows: list[dict[str, Any]] = USERS) -> Path:
    if kind == "csv":
        lines = ["email,role_id", *(f"{r['email']},{r['role_id'] or ''}" for r in rows)]
        return write(directory / "users.csv", "\n".join(lines) + "\n")
    if kind == "json":
        return write(directory / "users.json", json.dumps(rows, indent=1))
    items = "".join(f"- email: {r['email']}\n  role_id: {r['role_id'] or 'null'}\n" for r in rows)
    return write(directory / f"users.{kind}", items)


def user_roles(engine: sa.Engine) -> list[tuple[str, str | None]]:
    query = (sa.select(User.email, Role.name).select_from(User)
             .outerjoin(Role, User.role_id == Role.id).order_by(User.email))
    with engine.connect() as conn:
        return [(email, role) for email, role in conn.execute(query)]


@pytest.mark.parametrize("kind", ["csv", "json", "yaml", "yml"])
def test_refs_resolve_by_natural_key_and_order_the_seeds(db: TestDatabase, engine: sa.Engine,
                                                         kind: str) -> None:
    # The referencing seed is declared first: its refs make it run after roles.
    users = seedguard.data_seed("users", table=User, key="email",
                                path=users_file(db.tmp_path, kind),
                                refs={"role_id": ("roles", "name")})
    roles = seedguard.data_seed("roles", table="roles", key="name",
                                path=write(db.tmp_path / "roles.csv", ROLES))

    result = seedguard.apply(db.url, seeds=[users, roles])

    assert [u.name for u in result.applied] == ["roles", "users"]
    assert user_roles(engine) == [("ann@x.org", "admin"), ("bob@x.org", "viewer"),
                                  ("cid@x.org", None)]


def test_unknown_reference_names_file_line_and_column(db: TestDatabase,
                                                      engine: sa.Engine) -> None:
    bad = [*USERS[:1], {"email": "dan@x.org", "role_id": "admn"}, *USERS[1:]]
    path = users_file(db.tmp_path, "csv", bad)
    roles = seedguard.data_seed("roles", table=Role, key="name",
                                path=write(db.tmp_path / "roles.csv", ROLES))
    users = seedguard.data_seed("users", table=User, key="email", path=path,
                                refs={"role_id": (Role, "name")})

    with pytest.raises(seedguard.SeedFailed) as info:
        seedguard.apply(db.url, seeds=[roles, users])

    err = info.value.__cause__
    assert isinstance(err, DataError)
    assert (err.path, err.line, err.column) == (str(path), 3, "role_id")
    assert f"{path}:3: column 'role_id': no roles row with name 'admn'" in str(err)
    assert info.value.unit.name == "users"
    assert db.ledger() == [("roles", 1)]
    assert user_roles(engine) == []  # nothing of the failed unit was written


def test_a_model_as_target_and_a_reference_without_a_foreign_key(db: TestDatabase,
                                                                 engine: sa.Engine) -> None:
    seedguard.apply(db.url, seeds=[seedguard.data_seed(
        "roles", table=Role, key="name", rows=[{"name": "admin"}, {"name": "viewer"}])])
    with engine.begin() as conn:
        conn.execute(sa.insert(User), [{"id": 7, "email": "ann@x.org"},
                                       {"id": 9, "email": "bob@x.org"}])
    unit = seedguard.data_seed("notes", table=notes, key="title",
                               rows=[{"title": "hello", "author": "bob@x.org"}],
                               refs={"author": (User, "email")})

    seedguard.apply(db.url, seeds=[unit])

    assert db.execute("SELECT title, author FROM notes") == [("hello", 9)]


def test_composite_natural_key_as_a_list_or_as_several_columns(db: TestDatabase,
                                                               engine: sa.Engine) -> None:
    regions = seedguard.data_seed("regions", table=Region, key=["country", "code"], rows=[
        {"country": "fr", "code": "idf", "name": "Ile-de-France"},
        {"country": "fr", "code": "ara", "name": "Auvergne-Rhone-Alpes"},
        {"country": "be", "code": "ara", "name": "not the French one"}])
    listed = seedguard.data_seed(
        "cities-json", table=City, key="name",
        path=write(db.tmp_path / "cities.json",
                   '[{"name": "Paris", "region_id": ["fr", "idf"]},\n'
                   ' {"name": "Lyon", "region_id": ["fr", "ara"]}]'),
        refs={"region_id": (Region, ("country", "code"))})
    columns = seedguard.data_seed(
        "cities-csv", table=City, key="name",
        path=write(db.tmp_path / "cities.csv", "name,country,region\nLiege,be,ara\n"),
        refs={"region_id": ("regions", ("country", "code"), ("country", "region"))})

    seedguard.apply(db.url, seeds=[listed, columns, regions])

    query = (sa.select(City.name, Region.country, Region.code)
             .join(Region, City.region_id == Region.id).order_by(City.name))
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(query)] == [
            ("Liege", "be", "ara"), ("Lyon", "fr", "ara"), ("Paris", "fr", "idf")]


def test_prune_with_refs(db: TestDatabase, engine: sa.Engine) -> None:
    roles = seedguard.data_seed("roles", table=Role, key="name",
                                path=write(db.tmp_path / "roles.csv", ROLES))
    seedguard.apply(db.url, seeds=[roles])
    with engine.begin() as conn:
        conn.execute(sa.insert(User), [{"email": "old@x.org"}, {"email": "ann@x.org"}])
    users = seedguard.data_seed("users", table=User, key="email", prune=True,
                                path=users_file(db.tmp_path, "csv"),
                                refs={"role_id": ("roles", "name")})

    preview = seedguard.apply(db.url, seeds=[roles, users], dry_run=True).previews["users"]
    seedguard.apply(db.url, seeds=[roles, users])

    assert preview == UpsertResult(inserted=2, updated=1, deleted=1)
    assert user_roles(engine) == [("ann@x.org", "admin"), ("bob@x.org", "viewer"),
                                  ("cid@x.org", None)]


def test_dry_run_reports_unresolved_references(db: TestDatabase, engine: sa.Engine) -> None:
    seedguard.apply(db.url, seeds=[seedguard.data_seed(
        "roles", table=Role, key="name", rows=[{"name": "admin"}])])
    path = users_file(db.tmp_path, "json")
    users = seedguard.data_seed("users", table=User, key="email", path=path,
                                refs={"role_id": ("roles", "name")})

    result = seedguard.apply(db.url, seeds=[users], dry_run=True)

    preview = result.previews["users"]
    assert (preview.inserted, preview.updated, preview.unchanged) == (2, 0, 0)
    assert preview.unresolved == [
        f"{path}:6: column 'role_id': no roles row with name 'viewer'; fix the value, or "
        "seed that row first"]
    assert user_roles(engine) == []
    assert [u.name for u in result.pending] == ["users"]


def test_dry_run_counts_references_to_rows_a_pending_seed_would_insert(
        db: TestDatabase, engine: sa.Engine) -> None:
    # Nothing is written in a dry run, so roles is still empty when users is
    # previewed; the rows the pending roles seed holds still resolve.
    bad = [*USERS, {"email": "dan@x.org", "role_id": "admn"}]
    path = users_file(db.tmp_path, "csv", bad)
    users = seedguard.data_seed("users", table=User, key="email", path=path,
                                refs={"role_id": ("roles", "name")})
    roles = seedguard.data_seed("roles", table="roles", key="name",
                                path=write(db.tmp_path / "roles.csv", ROLES))

    previews = seedguard.apply(db.url, seeds=[users, roles], dry_run=True).previews

    assert previews["roles"] == UpsertResult(inserted=3)
    assert previews["users"] == UpsertResult(inserted=3, unresolved=[
        f"{path}:5: column 'role_id': no roles row with name 'admn'; fix the value, or "
        "seed that row first"])
    assert db.ledger() == [] and user_roles(engine) == []


def test_order_runs_a_reader_after_every_unit_that_fills_its_table() -> None:
    notes = unit("notes", fills=frozenset({"notes"}), reads=frozenset({"users"}))
    # Reading its own table (a self-reference) is no dependency.
    users = unit("users", fills=frozenset({"users"}), reads=frozenset({"roles", "users"}))
    other = unit("other")
    roles = unit("roles", fills=frozenset({"roles"}))
    more_roles = unit("more-roles", fills=frozenset({"roles"}), after=["other"])

    ordered = order([notes, users, other, roles, more_roles])

    assert [u.name for u in ordered] == ["other", "roles", "more-roles", "users", "notes"]
    assert [u.name for u in with_dependencies(ordered, "users")] == [
        "other", "roles", "more-roles", "users"]


def test_refs_cycle_is_a_definition_error(db: TestDatabase, engine: sa.Engine) -> None:
    roles = seedguard.data_seed("roles", table=Role, key="name", rows=[{"name": "a"}],
                                after=["users"])
    users = seedguard.data_seed("users", table=User, key="email", rows=USERS,
                                refs={"role_id": ("roles", "name")})
    with pytest.raises(DefinitionError, match=r"dependency cycle among units: .*roles"):
        seedguard.apply(db.url, seeds=[roles, users])
    assert db.ledger() == []


def test_bad_refs_are_definition_errors() -> None:
    for refs, message in [({"role_id": "roles"}, "must be \\(table, key column\\)"),
                          ({"role_id": ("roles", ())}, "names no key column"),
                          ({"region_id": ("regions", ("country", "code"), ("c",))},
                           "gives 1 data columns for the 2 key columns")]:
        with pytest.raises(DefinitionError, match=message):
            seedguard.data_seed("users", table=User, key="email", rows=USERS,
                                refs=refs)  # type: ignore[arg-type]


def test_yaml_without_pyyaml_names_the_extra(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "roles.yaml", "- name: admin\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # what `import yaml` sees without PyYAML
    with pytest.raises(DefinitionError, match=r"pip install 'seedguard\[yaml\]'"):
        seedguard.data_seed("roles", table=Role, key="name", path=path)


def test_bad_yaml_names_the_line(db: TestDatabase, engine: sa.Engine) -> None:
    path = write(db.tmp_path / "roles.yaml", "- name: admin\n- name: [unclosed\n")
    unit = seedguard.data_seed("roles", table=Role, key="name", path=path)
    with pytest.raises(seedguard.SeedFailed) as info:
        seedguard.apply(db.url, seeds=[unit])
    err = info.value.__cause__
    assert isinstance(err, DataError) and err.path == str(path) and err.line == 3
    write(path, "name: admin\n")
    with pytest.raises(seedguard.SeedFailed, match="expected a list of mappings"):
        seedguard.apply(db.url, seeds=[unit])


DIR_SEEDS = """
    import seedguard
    from models import Base

    seedguard.data_dir("data", metadata=Base, refs={
        "users": {"role_id": ("roles", "name")},
        "cities": {"region_id": ("regions", ("country", "code"), ("country", "region"))},
    })
    """


MODELS = """
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        pass

    sa.Table("roles", Base.metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(50), unique=True))
    sa.Table("users", Base.metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("email", sa.String(100), unique=True),
             sa.Column("role_id", sa.ForeignKey("roles.id")))
    sa.Table("regions", Base.metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("country", sa.String(2)), sa.Column("code", sa.String(10)),
             sa.Column("name", sa.String(100)), sa.UniqueConstraint("country", "code"))
    sa.Table("cities", Base.metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(100), unique=True),
             sa.Column("region_id", sa.ForeignKey("regions.id")))
    """


def _data_dir_project(root: Path) -> Path:
    write(root / "models.py", MODELS)
    data = root / "app" / "data"
    data.mkdir(parents=True)
    write(data / "users.csv", USERS_CSV)
    write(data / "roles.yaml", "- name: admin\n- name: editor\n- name: viewer\n")
    write(data / "regions.json", '[{"country": "fr", "code": "idf", "name": "IdF"}]')
    write(data / "cities.csv", "name,country,region\nParis,fr,idf\n")
    write_module(root, "app.seeds", DIR_SEEDS)
    return data


def test_data_dir_orders_by_foreign_keys_and_reapplies_one_changed_file(
        db: TestDatabase, engine: sa.Engine) -> None:
    data = _data_dir_project(db.tmp_path)
    sys.path.insert(0, str(db.tmp_path))
    try:
        first = seedguard.apply(db.url, seeds="app.seeds")
        write(data / "users.csv", USERS_CSV.replace("bob@x.org,viewer", "bob@x.org,editor"))
        second = seedguard.apply(db.url, seeds="app.seeds")
        third = seedguard.apply(db.url, seeds="app.seeds")
    finally:
        sys.path.remove(str(db.tmp_path))
        for name in [m for m in sys.modules if m in ("app", "models") or m.startswith("app.")]:
            del sys.modules[name]

    names = [u.name for u in first.applied]
    assert sorted(names) == ["cities", "regions", "roles", "users"]
    assert names.index("roles") < names.index("users")
    assert names.index("regions") < names.index("cities")
    assert [u.name for u in second.applied] == ["users"]
    assert third.applied == []
    assert user_roles(engine) == [("ann@x.org", "admin"), ("bob@x.org", "editor"),
                                  ("cid@x.org", None)]
    assert db.execute("SELECT c.name, r.code FROM cities c JOIN regions r "
                      "ON c.region_id = r.id") == [("Paris", "idf")]


def test_data_dir_rejects_files_without_a_table_and_ambiguous_keys(tmp_path: Path) -> None:
    write(tmp_path / "roles.csv", ROLES)
    write(tmp_path / "rolez.csv", ROLES)
    with pytest.raises(DefinitionError, match=r"rolez\.csv matches no table of the metadata"):
        seedguard.data_dir(tmp_path, metadata=Base.metadata)
    (tmp_path / "rolez.csv").unlink()
    write(tmp_path / "roles.json", "[]")
    with pytest.raises(DefinitionError, match=r"roles\.csv and roles\.json both fill"):
        seedguard.data_dir(tmp_path, metadata=Base)
    (tmp_path / "roles.json").unlink()

    ambiguous = sa.MetaData()
    sa.Table("roles", ambiguous, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(10), unique=True),
             sa.Column("slug", sa.String(10), unique=True))
    with pytest.raises(DefinitionError, match=r"several unique keys \(name; slug\)"):
        seedguard.data_dir(tmp_path, metadata=ambiguous)
    units = seedguard.data_dir(tmp_path, metadata=ambiguous, keys={"roles": "slug"})
    assert [u.name for u in units] == ["roles"]


def test_data_dir_without_metadata_reflects_and_orders_by_refs(db: TestDatabase,
                                                               engine: sa.Engine) -> None:
    folder = db.tmp_path / "data"
    folder.mkdir()
    write(folder / "notes.csv", "title,author\nhello,bob@x.org\n")  # sorts first, runs last
    write(folder / "users.csv", USERS_CSV)
    write(folder / "roles.csv", ROLES)

    units = seedguard.data_dir(folder, refs={"users": {"role_id": ("roles", "name")},
                                             "notes": {"author": ("users", "email")}})
    result = seedguard.apply(db.url, seeds=units)

    assert [u.name for u in units] == ["notes", "roles", "users"]
    assert [u.name for u in result.applied] == ["roles", "users", "notes"]
    assert user_roles(engine) == [("ann@x.org", "admin"), ("bob@x.org", "viewer"),
                                  ("cid@x.org", None)]
    assert db.execute("SELECT n.title, u.email FROM notes n JOIN users u ON n.author = u.id") \
        == [("hello", "bob@x.org")]
