"""Output options (``--json``) anywhere on the command line: before or after the verb,
under ``seedguard`` and ``flask seedguard`` alike, on each database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from _support import TestDatabase, write_module
from click.testing import CliRunner
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from seedguard.cli import cli
from seedguard.flask import SeedGuard

SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))
'''


@pytest.fixture
def seeds(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    db.create_effects_table()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"out_seeds_{uuid.uuid4().hex[:10]}"  # unique: sys.modules outlives a test
    write_module(tmp_path, name, SEEDS)
    return name


@pytest.mark.parametrize("verb", ["check", "status", "upgrade", "history"])
def test_json_before_the_verb_is_json_after_it(db: TestDatabase, seeds: str, verb: str) -> None:
    runner = CliRunner()
    common = ["--url", db.url, "--seeds", seeds]
    before = runner.invoke(cli, [*common, "--json", verb], catch_exceptions=False)
    after = runner.invoke(cli, [*common, verb, "--json"], catch_exceptions=False)
    assert before.exit_code == after.exit_code, before.output
    first, second = json.loads(before.stdout), json.loads(after.stdout)
    assert first["command"] == second["command"] == verb
    if verb == "check":  # nothing ran in between: the same answer
        assert before.exit_code == 3
        assert first == second
    if verb == "upgrade":  # the first one did the work, the second found it done
        assert [a["name"] for a in first["applied"]] == ["roles"]
        assert [s["name"] for s in second["skipped"]] == ["roles"]


def test_json_between_global_options_and_in_front_of_them(db: TestDatabase, seeds: str) -> None:
    result = CliRunner().invoke(cli, ["--json", "--url", db.url, "status", "--seeds", seeds],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [u["name"] for u in json.loads(result.stdout)["units"]] == ["roles"]


def test_json_errors_are_json_documents_before_the_verb_too(db: TestDatabase, seeds: str) -> None:
    result = CliRunner().invoke(cli, ["--url", db.url, "--json", "--seeds", "no_such_seeds_x",
                                      "status"], catch_exceptions=False)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == "ConfigError"


def test_json_with_a_verb_that_has_none_is_a_usage_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--json", "new", "roles"])
    assert result.exit_code == 2
    assert "`new` has no JSON output" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_flask_seedguard_json_before_the_verb(db: TestDatabase, seeds: str) -> None:
    app = Flask(f"app_{uuid.uuid4().hex[:6]}")
    app.config["SQLALCHEMY_DATABASE_URI"] = db.url
    fsa = SQLAlchemy(app)
    SeedGuard(app, fsa, seeds=seeds)
    runner = app.test_cli_runner()
    try:
        check = runner.invoke(args=["seedguard", "--json", "check"])
        assert check.exit_code == 3, check.output
        doc = json.loads(check.stdout)
        assert doc["command"] == "check" and doc["ok"] is False
        upgrade = runner.invoke(args=["seedguard", "--json", "upgrade"])
        assert upgrade.exit_code == 0, upgrade.output
        assert [a["name"] for a in json.loads(upgrade.stdout)["applied"]] == ["roles"]
        assert runner.invoke(args=["seedguard", "--json", "check"]).exit_code == 0
    finally:
        with app.app_context():
            fsa.engine.dispose()
    assert db.effects() == ["roles"]
