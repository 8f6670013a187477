"""``dialects=``: a unit limited to some databases is not applicable on the others,
``status`` says so, and the units after it run without it there; on each database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit
from click.testing import CliRunner

import seedguard
from seedguard import DefinitionError, api
from seedguard.cli import cli
from seedguard.registry import Registry

# What each test database answers to (MariaDB is reached through `mysql+pymysql://`).
ANSWERS = {"sqlite": {"sqlite"}, "postgresql": {"postgresql"}, "mariadb": {"mysql", "mariadb"}}


def dependent_units(only_on: str) -> Registry:
    return Registry([
        unit("native", dialects=[only_on]),
        unit("portable", after=["native"]),
    ])


@pytest.mark.parametrize("only_on", ["sqlite", "postgresql", "mysql", "mariadb"])
def test_a_unit_applies_only_on_its_dialects_and_its_dependents_run_anyway(
        db: TestDatabase, only_on: str) -> None:
    db.create_effects_table()
    result = seedguard.apply(db.url, seeds=dependent_units(only_on))
    here = only_on in ANSWERS[db.kind]
    expected = ["native", "portable"] if here else ["portable"]
    assert [a.name for a in result.applied] == expected
    assert db.effects() == expected
    assert db.ledger() == sorted((name, 1) for name in expected)
    again = seedguard.apply(db.url, seeds=dependent_units(only_on))
    assert again.applied == [] and [u.name for u in again.skipped] == expected


def test_status_reports_the_unit_as_inapplicable(db: TestDatabase) -> None:
    db.create_effects_table()
    elsewhere = "postgresql" if db.kind != "postgresql" else "sqlite"
    units = Registry([unit("native", dialects=elsewhere), unit("portable", after=["native"])])
    status = api.status(db.url, seeds=units)
    states = {u.name: u.state for u in status.units}
    assert states == {"portable": "pending", "native": "inapplicable"}
    assert not status.ok
    seedguard.apply(db.url, seeds=units)
    status = api.status(db.url, seeds=units)
    assert {u.name: u.state for u in status.units} == {"portable": "applied",
                                                      "native": "inapplicable"}
    assert status.ok  # not applicable here is nothing left to do
    document = status.as_dict()
    native = next(u for u in document["units"] if u["name"] == "native")
    assert native["dialects"] == [elsewhere]
    assert document["counts"]["inapplicable"] == 1


def test_the_cli_shows_inapplicable_units(db: TestDatabase, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_effects_table()
    monkeypatch.chdir(tmp_path)
    elsewhere = "postgresql" if db.kind != "postgresql" else "mariadb"

    @seedguard.seed("native", dialects=[elsewhere])
    def native(session: sa.orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit) VALUES ('native')"))

    @seedguard.seed("portable", after=["native"])
    def portable(session: sa.orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit) VALUES ('portable')"))

    runner = CliRunner()
    upgrade = runner.invoke(cli, ["--url", db.url, "upgrade"], catch_exceptions=False)
    assert upgrade.exit_code == 0, upgrade.output
    assert db.effects() == ["portable"]
    check = runner.invoke(cli, ["--url", db.url, "check"], catch_exceptions=False)
    assert check.exit_code == 0, check.output
    text = runner.invoke(cli, ["--url", db.url, "status"], catch_exceptions=False)
    line = next(line for line in text.stdout.splitlines() if " native " in line)
    assert line.split()[0] == "inapplicable"
    assert f"applies only to {elsewhere}, not to this database" in line
    doc = json.loads(runner.invoke(cli, ["--url", db.url, "status", "--json"]).stdout)
    assert {u["name"]: (u["state"], u["dialects"]) for u in doc["units"]} == {
        "native": ("inapplicable", [elsewhere]), "portable": ("applied", None)}


def test_a_dependency_outside_the_active_contexts_stays_a_definition_error(
        db: TestDatabase) -> None:
    units = Registry([unit("dev-only", contexts=frozenset({"dev"}), dialects=["sqlite"]),
                      unit("portable", after=["dev-only"])])
    with pytest.raises(DefinitionError, match="runs only in context"):
        seedguard.apply(db.url, seeds=units)
    assert db.ledger() == []


def test_data_seed_and_data_dir_take_dialects(db: TestDatabase, tmp_path: Path) -> None:
    db.execute("CREATE TABLE colours (name VARCHAR(20) PRIMARY KEY, hex VARCHAR(7))")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "colours.csv").write_text("name,hex\nred,#ff0000\n")
    here = "mysql" if db.kind == "mariadb" else db.kind
    elsewhere = "postgresql" if db.kind != "postgresql" else "sqlite"
    on_this = seedguard.data_dir(folder, dialects=[here])
    not_here = seedguard.data_seed("other-colours", table="colours", key="name",
                                   rows=[{"name": "blue", "hex": "#0000ff"}],
                                   dialects=elsewhere)
    assert [u.dialects for u in on_this] == [frozenset({here})]
    assert not_here.dialects == frozenset({elsewhere})
    result = seedguard.apply(db.url, seeds=[*on_this, not_here])
    assert [a.name for a in result.applied] == ["colours"]
    assert [tuple(r) for r in db.execute("SELECT name, hex FROM colours")] == [
        ("red", "#ff0000")]


@pytest.mark.parametrize("bad", [["oracle"], [], ["postgres"]])
def test_unknown_dialect_names_are_refused_at_declaration(bad: list[str]) -> None:
    with pytest.raises(DefinitionError, match="dialects="):
        unit("x", dialects=bad)
    with pytest.raises(DefinitionError, match="mariadb, mysql, postgresql, sqlite"):
        seedguard.seed("y", dialects=bad)(lambda session: None)


def test_a_plan_rehearses_and_applies_without_the_inapplicable_unit(db: TestDatabase) -> None:
    db.create_effects_table()
    elsewhere = "postgresql" if db.kind != "postgresql" else "sqlite"
    units = Registry([unit("native", dialects=[elsewhere]), unit("portable", after=["native"])])
    reviewed = seedguard.plan(db.url, seeds=units)
    assert [u.name for u in reviewed.units] == ["portable"]
    assert db.effects() == [] and db.ledger() == []  # a rehearsal is rolled back
    result = seedguard.apply(db.url, seeds=units, plan=reviewed)  # the digest still matches
    assert [a.name for a in result.applied] == ["portable"]
    assert db.effects() == ["portable"]
