"""The `seedguard` CLI through click's runner, on each database: every command and exit code.

Real-process runs (the console script, `python -m seedguard`, a second process
holding the lock, a terminal) are in ``test_cli_process.py``.
"""

from __future__ import annotations

import io
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _support import TestDatabase, write_module
from click.testing import CliRunner, Result

from seedguard import cli as sgcli
from seedguard.cli import cli, render
from seedguard.events import UnitFinished, UnitProgress, UnitStarted
from seedguard.registry import default_registry
from seedguard.unit import SeedUnit

UNITS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles"{roles_options})
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', '{body}')"))

@seedguard.seed("users", after=["roles"])
def users(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('users', 'x')"))
'''

BROKEN = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("first")
def first(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('first', 'x')"))

@seedguard.seed("broken", after=["first"])
def broken(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('broken', 'x')"))
    raise RuntimeError("boom")
'''

HALF_DONE = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("bulk", transactional=False)
def bulk(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('bulk', 'x')"))
    session.commit()
    raise RuntimeError("killed half-way")

@seedguard.seed("after-bulk", after=["bulk"])
def after_bulk(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('after-bulk', 'x')"))
'''


class Project:
    """A directory with seeds modules (unique module names: tests share sys.modules)."""

    def __init__(self, db: TestDatabase, path: Path) -> None:
        self.db = db
        self.path = path
        self.runner = CliRunner()

    def module(self, source: str) -> str:
        """A new seeds module; it replaces the earlier ones, as a new release of the code
        would (one process cannot declare two different units of one name)."""
        default_registry.clear()
        name = f"seeds_{uuid.uuid4().hex[:10]}"
        write_module(self.path, name, source)
        return name

    def units(self, body: str = "x", roles_options: str = "") -> str:
        return self.module(UNITS.format(body=body, roles_options=roles_options))

    def run(self, *args: str, seeds: str | None = None, url: bool = True,
            input: str | None = None) -> Result:
        options = ["--url", self.db.url] if url else []
        if seeds:
            options += ["--seeds", seeds]
        return self.runner.invoke(cli, [*options, *args], input=input,
                                  catch_exceptions=False)

    def json(self, *args: str, seeds: str | None = None) -> tuple[int, Any]:
        result = self.run(*args, seeds=seeds)
        return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def project(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    db.create_effects_table()
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    return Project(db, work)


def test_upgrade_prints_each_unit_then_a_summary(project: Project) -> None:
    seeds = project.units()
    first = project.run("upgrade", seeds=seeds)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].startswith("applying roles v1 ... done ") and lines[0].endswith(" ms")
    assert lines[1].startswith("applying users v1 ... done ")
    assert lines[2].startswith("applied 2 unit(s) in ")

    again = project.run("upgrade", seeds=seeds)
    assert again.exit_code == 0
    assert again.stdout == "nothing to do: 2 unit(s) already applied\n"
    assert project.db.effects() == ["roles", "users"]

    quiet = project.run("-q", "upgrade", seeds=seeds)
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_dry_run_lists_in_order_and_writes_nothing(project: Project) -> None:
    seeds = project.units()
    result = project.run("upgrade", "--dry-run", seeds=seeds)
    assert result.exit_code == 0
    assert result.stdout == "would apply 2 unit(s), in order:\n  roles v1\n  users v1\n"
    assert project.db.effects() == []
    assert project.db.ledger() == []

    code, doc = project.json("upgrade", "--dry-run", "--json", seeds=seeds)
    assert code == 0 and doc["dry_run"] is True
    assert [u["name"] for u in doc["pending"]] == ["roles", "users"]


def test_upgrade_target_runs_only_it_and_its_dependencies(project: Project) -> None:
    seeds = project.units()
    result = project.run("upgrade", "roles", seeds=seeds)
    assert result.exit_code == 0
    assert project.db.ledger() == [("roles", 1)]


def test_upgrade_json_document(project: Project) -> None:
    seeds = project.units()
    code, doc = project.json("upgrade", "--json", seeds=seeds)
    assert code == 0
    assert doc["ok"] is True and doc["command"] == "upgrade" and doc["dry_run"] is False
    assert [(u["name"], u["version"]) for u in doc["applied"]] == [("roles", 1), ("users", 1)]
    assert all(isinstance(u["duration_ms"], int) for u in doc["applied"])
    assert doc["skipped"] == doc["pending"] == doc["drifted"] == doc["ahead"] == []

    code, doc = project.json("upgrade", "--json", seeds=seeds)
    assert code == 0 and doc["applied"] == []
    assert [u["name"] for u in doc["skipped"]] == ["roles", "users"]


def test_failed_unit_exits_1_with_one_line_and_resumes(project: Project) -> None:
    seeds = project.module(BROKEN)
    result = project.run("upgrade", seeds=seeds)
    assert result.exit_code == 1
    assert "applying broken v1 ... failed" in result.stdout
    assert result.stderr.startswith("error: unit 'broken' v1 failed: RuntimeError: boom")
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert project.db.effects() == ["first"]

    verbose = project.run("-v", "upgrade", seeds=seeds)
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert 'raise RuntimeError("boom")' in verbose.stderr

    code, doc = project.json("upgrade", "--json", seeds=seeds)
    assert code == 1
    assert doc["ok"] is False and doc["command"] == "upgrade"
    assert doc["error"]["type"] == "SeedFailed" and doc["error"]["unit"] == "broken"
    assert doc["error"]["exit_code"] == 1
    assert doc["applied"] == []  # "first" was applied by the first run

    fresh = project.module(BROKEN.replace('"first"', '"first-again"'))
    code, doc = project.json("upgrade", "--json", seeds=fresh)
    assert code == 1 and [u["name"] for u in doc["applied"]] == ["first-again"]


def test_configuration_errors_exit_2(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    no_seeds = project.run("status")  # before anything declared a unit in this process
    assert no_seeds.exit_code == 2 and "no seeds configured" in no_seeds.stderr

    seeds = project.units()
    no_url = project.run("upgrade", seeds=seeds, url=False)
    assert no_url.exit_code == 2
    assert no_url.stderr.startswith("error: no database: give --url")

    missing = project.run("upgrade", seeds="no_such_seeds_module")
    assert missing.exit_code == 2 and "seeds module 'no_such_seeds_module' not found" \
        in missing.stderr

    bad_url = project.runner.invoke(cli, ["--url", "nosuchdialect://x", "--seeds", seeds,
                                          "status", "--json"])
    assert bad_url.exit_code == 2
    doc = json.loads(bad_url.stdout)
    assert doc == {"ok": False, "command": "status", "error": {
        "type": "ConfigError", "message": doc["error"]["message"], "exit_code": 2}}

    cycle = project.module('''
import seedguard
@seedguard.seed("a", after=["b"])
def a(session): pass
@seedguard.seed("b", after=["a"])
def b(session): pass
''')
    code, doc = project.json("upgrade", "--json", seeds=cycle)
    assert code == 2 and doc["error"]["type"] == "DefinitionError"

    assert project.run("upgrade", "--no-such-option", seeds=seeds).exit_code == 2
    assert project.run("resolve", "roles", seeds=seeds).exit_code == 2  # needs --applied/--retry
    assert project.run("-q", "-v", "status", seeds=seeds).exit_code == 2


def test_status_reports_each_state(project: Project) -> None:
    old = project.module('''
import seedguard
@seedguard.seed("roles", version=3)
def roles(session): pass
@seedguard.seed("retired")
def retired(session): pass
@seedguard.seed("kept")
def kept(session): pass
''')
    assert project.run("upgrade", seeds=old).exit_code == 0
    current = project.module('''
import seedguard
@seedguard.seed("roles", version=2)
def roles(session): pass
@seedguard.seed("kept")
def kept(session):
    return "changed"
@seedguard.seed("fresh")
def fresh(session): pass
''')
    code, doc = project.json("status", "--json", seeds=current)
    assert code == 0 and doc["ok"] is True and doc["command"] == "status"
    states = {u["name"]: u["state"] for u in doc["units"]}
    assert states == {"roles": "ahead", "kept": "drifted", "fresh": "pending",
                      "retired": "orphaned"}
    roles = next(u for u in doc["units"] if u["name"] == "roles")
    assert roles["version"] == 2 and roles["recorded_version"] == 3
    assert roles["applied_at"].endswith("+00:00") and ":" in roles["applied_by"]
    assert doc["counts"] == {"applied": 0, "pending": 1, "waiting": 0, "drifted": 1,
                             "ahead": 1, "blocked": 0, "orphaned": 1,
                             "inactive": 0, "inapplicable": 0}
    assert doc["ledger_exists"] is True
    assert doc["locks"]["file"]["holder"] is None and doc["locks"]["database"]["holder"] is None
    assert "***" not in doc["url"] or project.db.kind != "sqlite"

    text = project.run("status", seeds=current)
    assert text.exit_code == 0
    assert "  ahead     roles v2" in text.stdout
    assert "  drifted   kept v1" in text.stdout and "seedguard stamp kept" in text.stdout
    assert "  orphaned  retired" in text.stdout
    assert text.stdout.rstrip().endswith("lock: free")


def test_status_before_anything_ran(project: Project) -> None:
    seeds = project.units()
    code, doc = project.json("status", "--json", seeds=seeds)
    assert code == 0 and doc["ledger_exists"] is False
    assert [u["state"] for u in doc["units"]] == ["pending", "pending"]
    assert project.db.ledger() == []  # status never creates the ledger


def test_check_exit_codes_and_stamp_accepts_drift(project: Project) -> None:
    seeds = project.units(body="x")
    pending = project.run("check", seeds=seeds)
    assert pending.exit_code == 3
    assert "pending: roles v1" in pending.stdout and "pending: users v1" in pending.stdout

    assert project.run("upgrade", seeds=seeds).exit_code == 0
    ok = project.run("check", seeds=seeds)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: 2 unit(s) applied")

    changed = project.units(body="y")  # same units, roles' code changed
    drifted = project.run("check", seeds=changed)
    assert drifted.exit_code == 3 and "drifted: roles v1" in drifted.stdout
    stamped = project.run("stamp", "roles", "--yes", seeds=changed)
    assert stamped.exit_code == 0 and stamped.stdout == "restamped roles v1\n"
    assert project.run("check", seeds=changed).exit_code == 0
    assert project.db.effects() == ["roles", "users"]  # nothing re-ran


def test_stamp_baselines_and_forget_makes_pending(project: Project) -> None:
    seeds = project.units()
    stamped = project.run("stamp", "roles", seeds=seeds)
    assert stamped.exit_code == 0 and stamped.stdout == "stamped roles v1\n"
    assert project.run("stamp", "roles", seeds=seeds).stdout.startswith(
        "roles is already recorded as applied")
    assert project.run("upgrade", seeds=seeds).exit_code == 0
    assert project.db.effects() == ["users"]  # roles was baselined, not run

    forgot = project.run("forget", "roles", "--yes", seeds=seeds)
    assert forgot.exit_code == 0 and forgot.stdout == "forgot roles v1\n"
    assert project.run("upgrade", seeds=seeds).exit_code == 0
    assert sorted(project.db.effects()) == ["roles", "users"]
    assert project.run("forget", "roles", "--version", "7", seeds=seeds).stdout \
        .startswith("nothing recorded for roles v7")

    unknown = project.run("stamp", "nope", seeds=seeds)
    assert unknown.exit_code == 2 and "no unit named 'nope'" in unknown.stderr
    assert project.run("forget", "nope", seeds=seeds).exit_code == 2
    bad = project.run("stamp", "roles", "--version", "0", seeds=seeds)
    assert bad.exit_code == 2


def test_blocked_unit_and_resolve(project: Project) -> None:
    seeds = project.module(HALF_DONE)
    failed = project.run("upgrade", seeds=seeds)
    assert failed.exit_code == 1 and "may be half done" in failed.stderr
    code, doc = project.json("status", "--json", seeds=seeds)
    assert {u["name"]: u["state"] for u in doc["units"]} == {"bulk": "blocked",
                                                            "after-bulk": "pending"}
    assert project.run("check", seeds=seeds).exit_code == 3

    blocked = project.run("upgrade", seeds=seeds)
    assert blocked.exit_code == 1 and "seedguard resolve bulk" in blocked.stderr
    code, doc = project.json("upgrade", "--json", seeds=seeds)
    assert code == 1 and doc["error"]["type"] == "UnitBlocked"

    assert project.run("resolve", "after-bulk", "--retry", seeds=seeds).exit_code == 2
    retry = project.run("resolve", "bulk", "--retry", "--yes", seeds=seeds)
    assert retry.exit_code == 0 and "will run again" in retry.stdout
    assert project.run("resolve", "bulk", "--retry", seeds=seeds).exit_code == 2  # settled

    assert project.run("upgrade", seeds=seeds).exit_code == 1  # fails half-way again
    applied = project.run("resolve", "bulk", "--applied", seeds=seeds)
    assert applied.exit_code == 0 and "recorded as applied" in applied.stdout
    done = project.run("upgrade", seeds=seeds)
    assert done.exit_code == 0, done.output
    assert project.db.effects("after-bulk") == ["x"]
    assert project.db.ledger() == [("after-bulk", 1), ("bulk", 1)]


def test_history_newest_first(project: Project) -> None:
    first = project.module('''
import seedguard
@seedguard.seed("one")
def one(session): pass
''')
    assert project.run("upgrade", seeds=first).exit_code == 0
    time.sleep(1.1)  # applied_at has whole seconds on MariaDB
    second = project.module('''
import seedguard
@seedguard.seed("one", version=2)
def one(session): pass
''')
    assert project.run("upgrade", seeds=second).exit_code == 0
    code, doc = project.json("history", "--json")
    assert code == 0 and doc["command"] == "history"
    assert [(r["name"], r["version"], r["status"]) for r in doc["rows"]] == [
        ("one", 2, "applied"), ("one", 1, "applied")]
    assert set(doc["rows"][0]) == {"name", "version", "status", "checksum", "applied_at",
                                   "duration_ms", "applied_by", "description"}
    text = project.run("history")
    assert text.exit_code == 0
    assert text.stdout.index("one v2") < text.stdout.index("one v1")


def test_history_without_ledger(project: Project) -> None:
    code, doc = project.json("history", "--json")
    assert code == 0 and doc["rows"] == []
    assert "empty or not created yet" in project.run("history").stdout


def test_new_writes_a_template_that_refuses_to_run_unedited(project: Project) -> None:
    package = f"seedpkg_{uuid.uuid4().hex[:8]}"  # unique: sys.modules outlives a test
    result = project.run("new", "admin-user", "--dir", package)
    assert result.exit_code == 0
    path = project.path / package / "admin_user.py"
    assert str(path.relative_to(project.path)) in result.stdout
    source = path.read_text()
    assert '@seedguard.seed("admin-user", version=1)' in source
    (project.path / package / "__init__.py").touch()

    status = project.run("status", seeds=package)
    assert status.exit_code == 0 and "pending   admin-user v1" in status.stdout
    unedited = project.run("upgrade", seeds=package)
    assert unedited.exit_code == 1 and "NotImplementedError" in unedited.stderr
    assert project.db.ledger() == []

    again = project.run("new", "admin-user", "--dir", package)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert project.run("new", "bad name!").exit_code == 2


def test_init_writes_config_without_clobbering(project: Project) -> None:
    seeds = project.units()
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "app"\n')
    result = project.runner.invoke(cli, ["--url", project.db.url, "--seeds", seeds, "init"])
    assert result.exit_code == 0 and "added [tool.seedguard] to" in result.stdout
    text = pyproject.read_text()
    assert text.startswith('[project]\nname = "app"\n')
    assert f'seeds = "{seeds}"' in text

    # With the section in place, no options are needed.
    upgraded = project.runner.invoke(cli, ["upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert project.db.ledger() == [("roles", 1), ("users", 1)]

    again = project.runner.invoke(cli, ["--url", project.db.url, "init"])
    assert again.exit_code == 2 and "already has a [tool.seedguard] section" in again.stderr
    assert pyproject.read_text() == text
    nothing = project.runner.invoke(cli, ["init"], env={"SEEDGUARD_URL": ""})
    assert nothing.exit_code == 2


def test_init_creates_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--url", 'sqlite:///a "b".db', "--seeds", "s", "init"])
    assert result.exit_code == 0 and result.stdout.startswith("created ")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # tomli is seedguard's own dependency on 3.10
        import tomli as tomllib

    data = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert data == {"tool": {"seedguard": {"url": 'sqlite:///a "b".db', "seeds": "s"}}}


def test_environment_configures_the_cli(project: Project) -> None:
    seeds = project.units()
    result = project.runner.invoke(cli, ["upgrade"], env={"SEEDGUARD_URL": project.db.url,
                                                         "SEEDGUARD_SEEDS": seeds})
    assert result.exit_code == 0, result.output
    assert project.db.ledger() == [("roles", 1), ("users", 1)]


def test_contexts_select_units(project: Project) -> None:
    seeds = project.module('''
import seedguard
@seedguard.seed("always")
def always(session): pass
@seedguard.seed("demo-data", contexts=["dev"])
def demo(session): pass
''')
    assert project.run("upgrade", seeds=seeds).exit_code == 0
    assert project.db.ledger() == [("always", 1)]
    assert project.run("--context", "dev", "upgrade", seeds=seeds).exit_code == 0
    assert project.db.ledger() == [("always", 1), ("demo-data", 1)]


def _events(progress: Callable[[Any], None], unit: SeedUnit, pause: float) -> None:
    progress(UnitStarted(unit))
    progress(UnitProgress(unit, 50, 100))
    time.sleep(pause)
    progress(UnitFinished(unit, 1234))


def test_progress_on_a_terminal_ticks() -> None:
    unit = SeedUnit(name="big", fn=lambda session: None, version=2)
    out = io.StringIO()
    progress = render.Progress(out, tty=True)
    progress.TICK_SECONDS = 0.05
    _events(progress, unit, 0.3)
    text = out.getvalue()
    assert text.startswith("applying big v2 ... ")
    assert "\r\x1b[Kapplying big v2 ... 50 / 100 (50%), 0 s" in text  # sign of life
    assert text.endswith("\r\x1b[Kapplying big v2 ... done 1234 ms\n")

    plain = io.StringIO()
    _events(render.Progress(plain, tty=False), unit, 0.1)
    assert plain.getvalue() == "applying big v2 ... done 1234 ms\n"  # a log gets one line


def test_exit_code_table() -> None:
    from seedguard import ConfigError, DefinitionError, DriftError, LockTimeout, SeedFailed
    from seedguard.errors import UnitBlocked

    assert sgcli.exit_code(SeedFailed("x")) == 1
    assert sgcli.exit_code(UnitBlocked("x")) == 1
    assert sgcli.exit_code(DriftError("x")) == 1
    assert sgcli.exit_code(ConfigError("x")) == 2
    assert sgcli.exit_code(DefinitionError("x")) == 2
    assert sgcli.exit_code(LockTimeout("x")) == 4


def test_status_and_history_read_a_ledger_made_by_an_older_seedguard(project: Project) -> None:
    from alembic import command
    from alembic.config import Config

    from seedguard.ledger import HEAD_REVISION, migrations_path

    seeds = project.units()
    assert project.run("upgrade", seeds=seeds).exit_code == 0
    engine = project.db.engine()
    with engine.connect() as conn:  # take the ledger back to its first revision
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_path()))
        cfg.attributes.update(connection=conn, ledger_table="seedguard_ledger",
                              ledger_schema=None)
        command.downgrade(cfg, "sg0001")
        conn.commit()
    engine.dispose()

    code, doc = project.json("status", "--json", seeds=seeds)
    assert code == 0
    assert doc["ledger_revision"] == "sg0001" and doc["ledger_current"] is False
    assert [u["state"] for u in doc["units"]] == ["applied", "applied"]
    assert "made by an older seedguard" in project.run("status", seeds=seeds).stdout
    code, doc = project.json("history", "--json")
    assert sorted(r["name"] for r in doc["rows"]) == ["roles", "users"]

    assert project.run("stamp", "roles", seeds=seeds).exit_code == 0  # a write upgrades it
    code, doc = project.json("status", "--json", seeds=seeds)
    assert doc["ledger_revision"] == HEAD_REVISION and doc["ledger_current"] is True
    assert project.db.effects() == ["roles", "users"]


DATA_SEEDS = '''
import seedguard
seedguard.data_seed("colours", table="colours", key="code",
                    rows=[{{"code": "r", "name": "red"}}, {{"code": "g", "name": "{green}"}}])
'''


def test_dry_run_shows_what_a_data_seed_would_write(project: Project) -> None:
    project.db.execute("CREATE TABLE colours (code VARCHAR(8) PRIMARY KEY, name VARCHAR(20))")
    project.db.execute("INSERT INTO colours (code, name) VALUES ('g', 'GREEN')")
    seeds = project.module(DATA_SEEDS.format(green="green"))

    text = project.run("upgrade", "--dry-run", seeds=seeds)
    code, document = project.json("upgrade", "--dry-run", "--json", seeds=seeds)

    assert text.exit_code == 0, text.output
    assert "colours v1 (would insert 1, update 1, delete 0; 0 unchanged)" in text.stdout
    assert code == 0
    assert document["previews"] == {
        "colours": {"inserted": 1, "updated": 1, "unchanged": 0, "deleted": 0,
                    "table_exists": True}}
    assert project.db.execute("SELECT name FROM colours WHERE code = 'g'")[0][0] == "GREEN"


def test_changed_data_is_reapplied_without_a_drift_warning(project: Project) -> None:
    project.db.execute("CREATE TABLE colours (code VARCHAR(8) PRIMARY KEY, name VARCHAR(20))")
    assert project.run("upgrade", seeds=project.module(DATA_SEEDS.format(green="green"))) \
        .exit_code == 0

    changed = project.run("upgrade", seeds=project.module(DATA_SEEDS.format(green="lime")))

    assert changed.exit_code == 0, changed.output
    assert "applying colours v1" in changed.stdout
    assert "different checksum" not in changed.output
    assert project.db.execute("SELECT name FROM colours WHERE code = 'g'")[0][0] == "lime"


def test_status_shows_changed_data_as_pending(project: Project) -> None:
    project.db.execute("CREATE TABLE colours (code VARCHAR(8) PRIMARY KEY, name VARCHAR(20))")
    assert project.run("upgrade", seeds=project.module(DATA_SEEDS.format(green="green"))) \
        .exit_code == 0
    seeds = project.module(DATA_SEEDS.format(green="lime"))

    code, document = project.json("status", "--json", seeds=seeds)

    assert code == 0
    assert [(u["name"], u["state"]) for u in document["units"]] == [("colours", "pending")]
    assert project.run("check", seeds=seeds).exit_code == 3
