"""`seedguard stamp --all`: adopting a database that holds the data already.

Every selected pending unit is recorded as applied without running; contexts
select; what is applied, waiting or interrupted is left alone.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from _support import TestDatabase, write_module
from click.testing import CliRunner, Result

from seedguard.adopt import stamp_all
from seedguard.cli import cli
from seedguard.errors import ConfigError
from seedguard.registry import default_registry

UNITS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))

@seedguard.seed("users", after=["roles"])
def users(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('users', 'x')"))

@seedguard.seed("demo", contexts=["dev"])
def demo(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('demo', 'x')"))
'''


@pytest.fixture
def seeds(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db.create_effects_table()
    name = f"adopt_{uuid.uuid4().hex[:10]}"
    write_module(tmp_path, name, UNITS)
    (tmp_path / name).mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return name


def run(db: TestDatabase, seeds: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", db.url, "--seeds", seeds, *args],
                              catch_exceptions=False)


def test_stamp_all_records_pending_units_without_running_them(db: TestDatabase,
                                                              seeds: str) -> None:
    stamped = run(db, seeds, "stamp", "--all", "--yes")
    assert stamped.exit_code == 0, stamped.output
    assert stamped.stdout == "stamped roles v1, users v1\n"
    assert db.ledger() == [("roles", 1), ("users", 1)]

    again = run(db, seeds, "stamp", "--all", "--yes")
    dev = run(db, seeds, "stamp", "--all", "--yes", "--context", "dev")
    upgrade = run(db, seeds, "upgrade", "--context", "dev")

    assert again.stdout == "nothing is pending; nothing changed\n"
    assert dev.stdout == "stamped demo v1\n"
    assert upgrade.exit_code == 0
    assert db.ledger() == [("demo", 1), ("roles", 1), ("users", 1)]
    assert db.effects() == []  # nothing ever ran


def test_stamp_all_json(db: TestDatabase, seeds: str) -> None:
    first = run(db, seeds, "stamp", "--json", "--all", "--yes")
    second = run(db, seeds, "stamp", "--all", "--yes", "--json")

    assert first.exit_code == 0 and json.loads(first.stdout) == {
        "ok": True, "command": "stamp", "changed": True, "changes": [
            {"name": "roles", "action": "stamped", "versions": [1]},
            {"name": "users", "action": "stamped", "versions": [1]}]}
    assert json.loads(second.stdout) == {
        "ok": True, "command": "stamp", "changed": False, "changes": []}


def test_stamp_all_stamps_only_what_is_pending(db: TestDatabase, seeds: str) -> None:
    assert run(db, seeds, "upgrade", "roles").exit_code == 0
    assert db.effects() == ["roles"]

    changes = stamp_all(db.url, seeds=seeds)

    assert [(c.name, c.action) for c in changes] == [("users", "stamped")]
    assert db.effects() == ["roles"]


def test_stamp_all_accepts_changed_data(db: TestDatabase, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit that re-applies on change (a .sql unit) is pending after an edit;
    # stamping it accepts the edit without running it.
    db.create_effects_table()
    package = f"adopt_sql_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    sql = tmp_path / package / "effects.sql"
    sql.write_text("INSERT INTO effects (unit, value) VALUES ('effects', 'one');\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [c.action for c in stamp_all(db.url, seeds=package)] == ["stamped"]
    sql.write_text("INSERT INTO effects (unit, value) VALUES ('effects', 'two');\n")
    default_registry.clear()

    changes = stamp_all(db.url, seeds=package)
    check = run(db, package, "check")

    assert [(c.name, c.action) for c in changes] == [("effects", "restamped")]
    assert check.exit_code == 0, check.output
    assert db.effects() == []


def test_stamp_all_usage(db: TestDatabase, seeds: str) -> None:
    neither = run(db, seeds, "stamp", "--yes")
    both = run(db, seeds, "stamp", "roles", "--all", "--yes")
    version = run(db, seeds, "stamp", "--all", "--version", "2", "--yes")

    assert neither.exit_code == 2 and "give a unit NAME, or --all" in neither.stderr
    assert both.exit_code == 2
    assert version.exit_code == 2 and "--version goes with a NAME" in version.stderr
    assert db.ledger() == []


def test_stamp_all_refuses_an_interrupted_unit(db: TestDatabase, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"adopt_half_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, name, '''
        import seedguard

        @seedguard.seed("half", transactional=False)
        def half(session):
            raise RuntimeError("interrupted")

        @seedguard.seed("other")
        def other(session):
            pass
        ''')
    monkeypatch.syspath_prepend(str(tmp_path))
    failed = run(db, name, "upgrade")
    assert failed.exit_code == 1
    before = db.ledger()

    with pytest.raises(ConfigError, match=r"half were interrupted mid-way.*nothing was stamped"):
        stamp_all(db.url, seeds=name)
    assert db.ledger() == before
