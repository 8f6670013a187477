""".sql units on each database: run once in the unit's transaction, re-run when edited,
dialect variants, statements split by a real tokenizer, failures named by file and line,
bad files refused before anything is written, files found in a seeds package."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, write_module

import seedguard
from seedguard import DataError, DefinitionError, SeedFailed
from seedguard.sqlfiles import split

metadata = sa.MetaData()
items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
)


@pytest.fixture
def engine(db: TestDatabase) -> Iterator[sa.Engine]:
    engine = db.engine()
    metadata.create_all(engine)
    yield engine


def names(db: TestDatabase) -> list[str]:
    return sorted(row[0] for row in db.execute("SELECT name FROM items"))


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


ITEMS_SQL = """\
-- Seed rows; a semicolon in a comment; does not split.
INSERT INTO items (name) VALUES ('semi;colon');  -- trailing comment
/* a block comment;
   over two lines */
INSERT INTO items (name) VALUES ('it''s'), ('100%');
INSERT INTO items (name) VALUES ('-- not a comment');
"""


def test_sql_file_runs_once_and_reruns_when_edited(db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    path = write(folder, "items.sql", ITEMS_SQL)

    first = seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))
    again = seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))
    assert [u.name for u in first.applied] == ["items"]
    assert again.applied == [] and [u.name for u in again.skipped] == ["items"]
    assert names(db) == ["-- not a comment", "100%", "it's", "semi;colon"]

    path.write_text("DELETE FROM items WHERE name LIKE '1%';\n", encoding="utf-8")
    edited = seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))

    assert [u.name for u in edited.applied] == ["items"]
    assert names(db) == ["-- not a comment", "it's", "semi;colon"]
    assert db.ledger() == [("items", 1)]


def test_dialect_variant_wins_on_its_dialect(db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    write(folder, "items.sql", "INSERT INTO items (name) VALUES ('generic');\n")
    own = {"sqlite": "sqlite", "postgresql": "postgresql", "mariadb": "mysql"}[db.kind]
    write(folder, f"items.{own}.sql", f"INSERT INTO items (name) VALUES ('{own} only');\n")
    other = "sqlite" if db.kind != "sqlite" else "postgresql"
    write(folder, f"items.{other}.sql", "INSERT INTO items (name) VALUES ('wrong');\n")

    seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))

    assert names(db) == [f"{own} only"]


def test_missing_variant_fails_the_unit_naming_the_files(db: TestDatabase,
                                                         engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    other = "sqlite" if db.kind != "sqlite" else "postgresql"
    write(folder, f"items.{other}.sql", "INSERT INTO items (name) VALUES ('x');\n")

    with pytest.raises(SeedFailed, match=rf"no SQL file for .*items\.{other}\.sql.*add items\.sql"):
        seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))
    assert db.ledger() == []


def test_failing_statement_rolls_back_the_whole_file_naming_file_and_line(
        db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    path = write(folder, "items.sql", """\
        INSERT INTO items (name) VALUES ('a');
        INSERT INTO items (name) VALUES ('b');

        -- the duplicate below fails
        INSERT INTO items (name)
          VALUES ('a');
        """)

    with pytest.raises(SeedFailed) as caught:
        seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))

    assert f"{path}:5: statement failed" in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, DataError) and cause.line == 5 and cause.path == str(path)
    assert names(db) == []
    assert db.ledger() == []


@pytest.mark.parametrize(("filename", "text", "message"), [
    ("items.sql", "INSERT INTO items (name) VALUES ('a');\nINSERT INTO items (name) VALUES ('b);\n",
     r"items\.sql:2: unterminated quote"),
    ("items.sql", "INSERT INTO items (name) VALUES ('a');\n/* never closed\n",
     r"items\.sql:2: unterminated /\* comment"),
    ("items.oracle.sql", "INSERT INTO items (name) VALUES ('a');\n",
     r"unknown dialect suffix 'oracle'"),
    ("items.sql", "BEGIN;\nINSERT INTO items (name) VALUES ('a');\nCOMMIT;\n",
     r"items\.sql:1: BEGIN would end or open the unit's transaction"),
    ("items.sql", "-- nothing here\n", r"holds no SQL statement"),
])
def test_bad_file_is_a_definition_error_before_anything_is_written(
        db: TestDatabase, engine: sa.Engine, filename: str, text: str, message: str) -> None:
    folder = db.tmp_path / "sql"
    write(folder, "aaa.sql", "INSERT INTO items (name) VALUES ('first');\n")
    write(folder, filename, text)

    with pytest.raises(DefinitionError, match=message):
        seedguard.sql_dir(folder)

    assert len(seedguard.registry.default_registry) == 0
    assert names(db) == [] and db.ledger() == []


def test_delimiter_blocks(db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    write(folder, "items.sql", """\
        DELIMITER //
        INSERT INTO items (name) VALUES ('a;b')//
        INSERT INTO items (name) VALUES ('c//d') //
        DELIMITER ;
        INSERT INTO items (name) VALUES ('e');
        """)

    seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))

    assert names(db) == ["a;b", "c//d", "e"]


# Each database's own block syntax, with semicolons inside the block.
BLOCKS = {
    "postgresql": """\
        DO $body$
        BEGIN
          INSERT INTO items (name) VALUES ('x;1');
          INSERT INTO items (name) VALUES ($$y;2$$);
        END
        $body$;
        INSERT INTO items (name) VALUES ('z');
        """,
    "mariadb": """\
        DELIMITER $$
        BEGIN NOT ATOMIC
          INSERT INTO items (name) VALUES ('x;1');
          INSERT INTO items (name) VALUES ('y;2');
        END $$
        DELIMITER ;
        INSERT INTO items (name) VALUES ('z');
        """,
    "sqlite": """\
        CREATE TEMP TRIGGER twice AFTER INSERT ON items WHEN NEW.name = 'x;1'
        BEGIN
          INSERT INTO items (name) VALUES ('y;2');
        END;
        INSERT INTO items (name) VALUES ('x;1');
        INSERT INTO items (name) VALUES ('z');
        """,
}


def test_block_statements_of_each_database(db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    write(folder, "items.sql", BLOCKS[db.kind])

    seedguard.apply(db.url, seeds=seedguard.sql_dir(folder))

    assert names(db) == ["x;1", "y;2", "z"]


# What the guard's reader of statement text makes of blocks: their own BEGIN
# and END are not transaction control; a COMMIT inside or after one still is.
# (The canary in seedguard.verify is the real check; this is the early refusal.)
READER_PASSES = [
    ("sqlite", "CREATE TEMP TRIGGER t AFTER INSERT ON items BEGIN "
               "INSERT INTO items (name) VALUES ('y;2'); END"),
    ("sqlite", "CREATE TRIGGER t AFTER INSERT ON items WHEN NEW.name = 'x' BEGIN "
               "UPDATE items SET name = CASE WHEN name = 'a' THEN 'b' ELSE 'c' END; "
               "DELETE FROM items WHERE name = 'end'; END; INSERT INTO items VALUES (1, 'x')"),
    ("mariadb", "BEGIN NOT ATOMIC INSERT INTO items (name) VALUES ('x;1'); "
                "INSERT INTO items (name) VALUES ('y;2'); END"),
    ("mariadb", "outer: BEGIN NOT ATOMIC DECLARE n INT DEFAULT 0; "
                "IF n = 0 THEN BEGIN INSERT INTO items (name) VALUES ('a'); END; END IF; "
                "WHILE n < 2 DO SET n = n + 1; END WHILE; END outer"),
    ("mysql", "BEGIN NOT ATOMIC CREATE TEMPORARY TABLE tmp (id INT); END"),
    ("postgresql", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END"),
    ("postgresql", "DO $body$ BEGIN INSERT INTO items (name) VALUES ('x;1'); END $body$"),
]
READER_REFUSES = [
    ("sqlite", "BEGIN"),
    ("sqlite", "END"),
    ("sqlite", "CREATE TEMP TRIGGER t AFTER INSERT ON items BEGIN "
               "INSERT INTO items (name) VALUES ('y'); END; COMMIT"),
    ("sqlite", "CREATE TEMP TRIGGER t AFTER INSERT ON items BEGIN "
               "INSERT INTO items (name) VALUES ('y'); END; END"),
    ("sqlite", "INSERT INTO items (name) VALUES ('begin'); COMMIT"),
    ("mariadb", "BEGIN"),
    ("mariadb", "BEGIN WORK"),
    ("mariadb", "START TRANSACTION"),
    ("mariadb", "BEGIN NOT ATOMIC COMMIT; END"),
    ("mariadb", "BEGIN NOT ATOMIC INSERT INTO items (name) VALUES ('a'); ROLLBACK; END"),
    ("mariadb", "BEGIN NOT ATOMIC IF 1 THEN COMMIT; END IF; END"),
    ("mariadb", "BEGIN NOT ATOMIC WHILE 1 DO START TRANSACTION; END WHILE; END"),
    ("mariadb", "BEGIN NOT ATOMIC BEGIN SELECT 1; END; COMMIT; END"),
    ("mariadb", "l1: BEGIN NOT ATOMIC l2: LOOP COMMIT; END LOOP; END"),
    ("mariadb", "BEGIN NOT ATOMIC CREATE TABLE other (id INT); END"),
    ("mariadb", "BEGIN NOT ATOMIC SELECT 1; END; COMMIT"),
    ("mysql", "BEGIN NOT ATOMIC TRUNCATE TABLE items; END"),
    ("postgresql", "BEGIN NOT ATOMIC SELECT 1; END"),
    ("postgresql", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; END"),
    ("postgresql", "DO $$ BEGIN NULL; END $$; COMMIT"),
]


@pytest.mark.parametrize(("dialect", "sql"), READER_PASSES)
def test_reader_passes_the_blocks_own_begin_and_end(dialect: str, sql: str) -> None:
    from seedguard.guard import transaction_ender

    assert transaction_ender(sql, dialect) is None


@pytest.mark.parametrize(("dialect", "sql"), READER_REFUSES)
def test_reader_refuses_transaction_control_in_and_around_blocks(dialect: str,
                                                                 sql: str) -> None:
    from seedguard.guard import transaction_ender

    assert transaction_ender(sql, dialect) is not None


def test_sql_files_in_a_seeds_package_are_its_units(db: TestDatabase, engine: sa.Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    package = f"sqlseeds_{uuid.uuid4().hex[:8]}"
    write_module(db.tmp_path, f"{package}.code", """\
        import sqlalchemy as sa
        import seedguard

        @seedguard.seed("after-sql", after=["base"])
        def after_sql(session):
            session.execute(sa.text("INSERT INTO items (name) VALUES ('from python')"))
        """)
    write(db.tmp_path / package, "base.sql", "INSERT INTO items (name) VALUES ('from sql');\n")
    write(db.tmp_path / package / "more", "__init__.py", "")
    write(db.tmp_path / package / "more", "extra.sql",
          "INSERT INTO items (name) VALUES ('from sub');\n")
    monkeypatch.syspath_prepend(str(db.tmp_path))

    result = seedguard.apply(db.url, seeds=package)
    again = seedguard.apply(db.url, seeds=package)

    assert [u.name for u in result.applied] == ["base", "after-sql", "extra"]
    assert again.applied == []
    assert names(db) == ["from python", "from sql", "from sub"]


def test_bad_sql_file_in_a_seeds_package_stops_discovery(db: TestDatabase, engine: sa.Engine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    package = f"sqlseeds_{uuid.uuid4().hex[:8]}"
    write_module(db.tmp_path, f"{package}.code", """\
        import seedguard

        @seedguard.seed("code")
        def code(session):
            pass
        """)
    write(db.tmp_path / package, "broken.sql", "INSERT INTO items (name) VALUES ('x);\n")
    monkeypatch.syspath_prepend(str(db.tmp_path))

    with pytest.raises(DefinitionError, match=r"broken\.sql:1: unterminated quote"):
        seedguard.apply(db.url, seeds=package)
    assert db.ledger() == []


# -- the splitter alone ------------------------------------------------------------


def test_split_keeps_lines_and_drops_delimiters_and_comments() -> None:
    text = "-- head\nSELECT 1;\n\n/* c */ SELECT ';' ; -- tail\nSELECT $t$ ; $t$\n"
    assert [(s.text, s.line) for s in split(text)] == [
        ("SELECT 1", 2), ("SELECT ';'", 4), ("SELECT $t$ ; $t$", 5)]


def test_split_delimiter_block_ends_with_its_delimiter() -> None:
    with pytest.raises(DefinitionError, match=r"<sql>:3: statement not ended by the delimiter"):
        split("DELIMITER //\nSELECT 1 //\nSELECT 2\nDELIMITER ;\n")


def test_split_keeps_begin_end_blocks_whole() -> None:
    trigger = "CREATE TRIGGER t AFTER INSERT ON items BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    compound = "DELIMITER $$\nBEGIN NOT ATOMIC\n  SELECT 1;\nEND $$\nDELIMITER ;\nSELECT 3;\n"
    assert [s.line for s in split(trigger)] == [1]
    assert [(s.text, s.line) for s in split(compound)] == [
        ("BEGIN NOT ATOMIC\n  SELECT 1;\nEND", 2), ("SELECT 3", 6)]


def test_split_delimiter_inside_a_string_is_text() -> None:
    text = "SELECT '\nDELIMITER //\n';\nSELECT 2;\n"
    assert [s.line for s in split(text)] == [1, 4]


def test_dialects_limits_the_units(db: TestDatabase, engine: sa.Engine) -> None:
    folder = db.tmp_path / "sql"
    write(folder, "items.sql", "INSERT INTO items (name) VALUES ('x');\n")
    with pytest.raises(DefinitionError, match=r"unknown dialect\(s\) oracle in dialects="):
        seedguard.sql_dir(folder, dialects=["oracle"])
    other = "sqlite" if db.kind != "sqlite" else "postgresql"

    # Limited to another database: not applicable here, so it does not run.
    result = seedguard.apply(db.url, seeds=seedguard.sql_dir(folder, dialects=[other]))
    assert result.applied == []
    assert names(db) == [] and db.ledger() == []
