"""`seedguard diff` on each database: seeded rows changed or deleted since they were
seeded, by key with the changed columns; nothing and exit 0 when there are none, exit 3
when there are (a CI gate)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from _support import TestDatabase, write_module
from click.testing import CliRunner, Result

from seedguard.cli import cli
from seedguard.diff import diff
from seedguard.errors import ConfigError

SEEDS = '''
import pathlib
import seedguard

HERE = pathlib.Path(__file__).parent

@seedguard.seed("tables")
def tables(session):
    pass  # a code unit (the table is made by the test: DDL commits on MariaDB)

seedguard.data_seed("colors", table="colors", key="name", path=HERE / "colors.csv",
                    after=["tables"])
'''
CSV = "id,name,hex,pos\n1,red,#ff0000,1\n2,green,#00ff00,2\n3,blue,#0000ff,3\n"


@pytest.fixture
def seeds(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db.execute("CREATE TABLE colors (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, "
               "hex VARCHAR(7) NOT NULL, pos INTEGER, CONSTRAINT uq_colors_name UNIQUE (name))")
    name = f"diff_{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, name, SEEDS)
    (tmp_path / "colors.csv").write_text(CSV)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def run(db: TestDatabase, seeds: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", db.url, "--seeds", seeds, *args],
                              catch_exceptions=False)


def test_no_change_is_silent_and_exit_0(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0

    result = run(db, seeds, "diff")

    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert diff(db.url, seeds=seeds).compared == ["colors"]


def test_changed_and_deleted_rows_by_key_with_columns(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    db.execute("UPDATE colors SET hex = '#ee0000' WHERE name = 'red'")
    db.execute("DELETE FROM colors WHERE name = 'blue'")
    db.execute("INSERT INTO colors (id, name, hex) VALUES (9, 'mauve', '#e0b0ff')")  # not seeded

    found = diff(db.url, seeds=seeds)
    text = run(db, seeds, "diff")
    document = run(db, seeds, "diff", "colors", "--json")

    assert [(r.key, r.state, r.columns) for r in found.rows] == [
        ("red", "changed", {"hex": ("#ff0000", "#ee0000")}), ("blue", "deleted", {})]
    assert text.exit_code == 3
    assert text.stdout.splitlines() == [
        "colors: colors 'red': changed: hex '#ff0000' -> '#ee0000'",
        "colors: colors 'blue': deleted"]
    assert document.exit_code == 3
    assert json.loads(document.stdout)["rows"] == [
        {"unit": "colors", "table": "colors", "key": "red", "state": "changed",
         "columns": {"hex": {"seeded": "#ff0000", "now": "#ee0000"}}},
        {"unit": "colors", "table": "colors", "key": "blue", "state": "deleted",
         "columns": {}}]


def test_a_data_seed_changed_since_is_not_compared(db: TestDatabase, seeds: str,
                                                   tmp_path: Path) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0
    db.execute("DELETE FROM colors WHERE name = 'blue'")
    (tmp_path / "colors.csv").write_text(CSV.replace("#00ff00", "#00ee00"))

    found = diff(db.url, seeds=seeds)

    assert found.rows == [] and "changed since it was applied" in found.not_compared["colors"]


def test_a_code_unit_or_an_unknown_name_is_a_config_error(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade").exit_code == 0

    with pytest.raises(ConfigError, match="'tables' is a code unit"):
        diff(db.url, name="tables", seeds=seeds)
    unknown = run(db, seeds, "diff", "nope")

    assert unknown.exit_code == 2 and "no unit named 'nope'" in unknown.stderr
