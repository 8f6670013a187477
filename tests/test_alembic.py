"""Alembic integration against a real alembic project in tmp, on each database.

Seeds that wait for their schema (``requires_revision``), one lock for schema
and seed upgrades (``schema=True`` / ``upgrade --schema``, 8 real processes),
and autogenerate that leaves the ledger alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _alembic_project import (
    R1,
    R2,
    R3,
    REVISIONS,
    alembic_upgrade,
    create_schema_log,
    make_project,
    schema_log,
)
from _support import TestDatabase, child_env, run_processes, unit, write_module

import seedguard
import seedguard.alembic
import seedguard.cli
from seedguard import ConfigError
from seedguard.config import resolve
from seedguard.result import Waiting


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The project's env.py calls fileConfig; tests that run alembic directly in this
    process must not leave later tests (in other files) with muted loggers."""
    with seedguard.alembic._loggers_kept():
        yield


@pytest.fixture
def project(db: TestDatabase) -> tuple[TestDatabase, str]:
    """A database with effects and schema_log tables, and an alembic project for it."""
    db.create_effects_table()
    create_schema_log(db.url)
    return db, str(make_project(db.tmp_path / "app", db.url))


def insert_gadget(session: Any) -> None:
    session.execute(sa.text("INSERT INTO gadgets (name) VALUES ('g')"))
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('gadgets', 'x')"))


def count(db: TestDatabase, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


def test_unit_waits_for_its_revision_then_applies(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    alembic_upgrade(ini, R1)
    units = [
        unit("plain"),
        unit("gadgets", fn=insert_gadget, requires_revision=R2),
        unit("after-gadgets", after=["gadgets"]),
    ]

    first = seedguard.apply(db.url, seeds=units, alembic_config=ini)

    assert [u.name for u in first.applied] == ["plain"]
    assert first.waiting == [
        Waiting("gadgets", 1, R2, units[1]),
        Waiting("after-gadgets", 1, R2, units[2], via="gadgets"),
    ]
    assert "waits for alembic revision 'bbbb00000002'" in first.waiting[0].message()
    assert "gadgets" not in db.tables()
    assert db.ledger() == [("plain", 1)]

    status = seedguard.api.status(resolve(db.url, seeds=units, alembic_config=ini))
    states = {u.name: u for u in status.units}
    assert states["gadgets"].state == "waiting"
    assert states["gadgets"].waits_for == R2
    assert states["after-gadgets"].state == "waiting"
    assert not status.ok  # `seedguard check` fails while a unit waits

    alembic_upgrade(ini)  # to r3: r2 is now an ancestor of the head, which also counts
    # A unit needing an older revision (r1) is satisfied by its descendant r3;
    # a unique prefix names a revision as it does for alembic's own commands.
    later = [*units, unit("widgets", requires_revision=R1[:6])]
    second = seedguard.apply(db.url, seeds=later, alembic_config=ini)

    assert [u.name for u in second.applied] == ["gadgets", "after-gadgets", "widgets"]
    assert second.waiting == []
    assert count(db, "gadgets") == 1
    assert sorted(db.effects()) == ["after-gadgets", "gadgets", "plain", "widgets"]


def seedguard_cli(db: TestDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, in a real process, run from the project's folder."""
    return subprocess.run([sys.executable, "-m", "seedguard", "--url", db.url, *args],
                          capture_output=True, text=True, timeout=120, cwd=db.tmp_path,
                          env=child_env(db.tmp_path), check=False)


def test_cli_status_says_why_a_unit_waits(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    alembic_upgrade(ini, R1)
    write_module(db.tmp_path, "app_seeds", SEEDS.format(r1=R1, r3=R3))
    common = ["--seeds", "app_seeds", "--alembic-config", ini]

    first = seedguard_cli(db, *common, "upgrade")
    status = seedguard_cli(db, *common, "status")
    check = seedguard_cli(db, *common, "check")
    after = seedguard_cli(db, *common, "upgrade", "--schema", "--json")

    assert first.returncode == 0, first.stderr
    assert "'gadgets' v1 waits for alembic revision 'cccc00000003'" in first.stdout
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if "gadgets v1" in x)
    assert "waiting" in line and f"waits for alembic revision {R3}" in line
    assert check.returncode == 3
    assert after.returncode == 0, after.stderr
    document = json.loads(after.stdout)
    assert document["migrated"] == [R2, R3]
    assert [item["name"] for item in document["applied"]] == ["gadgets"]
    assert document["waiting"] == []


def test_no_op_start_up_is_one_query_even_with_requirements(
        project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    alembic_upgrade(ini)
    units = [unit("plain"), unit("gadgets", fn=insert_gadget, requires_revision=R2)]
    seedguard.apply(db.url, seeds=units, alembic_config=ini)

    engine = db.engine()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, *a: statements.append(stmt))
    # The revision graph is not read: no pending unit declares a requirement.
    result = seedguard.apply(engine, seeds=units, alembic_config=str(db.tmp_path / "missing"))

    assert result.applied == [] and result.waiting == []
    assert len(statements) == 1, statements


def test_requirement_without_alembic_config_names_the_setting(
        db: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(db.tmp_path)  # no alembic.ini here to fall back on
    with pytest.raises(ConfigError, match=r"alembic_config under \[tool\.seedguard\]"):
        seedguard.apply(db.url, seeds=[unit("gadgets", requires_revision=R2)])


def test_unknown_required_revision_is_a_config_error(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    with pytest.raises(ConfigError, match="requires alembic revision 'deadbeef'"):
        seedguard.apply(db.url, seeds=[unit("x", requires_revision="deadbeef")],
                        alembic_config=ini)
    assert db.ledger() == []


def test_alembic_config_from_environment_and_folder(
        project: tuple[TestDatabase, str], monkeypatch: pytest.MonkeyPatch) -> None:
    db, ini = project
    alembic_upgrade(ini)
    monkeypatch.setenv("SEEDGUARD_ALEMBIC_CONFIG", str(Path(ini).parent))  # the folder works too
    result = seedguard.apply(db.url, seeds=[unit("gadgets", fn=insert_gadget,
                                                 requires_revision=R2)])
    assert [u.name for u in result.applied] == ["gadgets"]


def test_schema_true_upgrades_schema_then_seeds(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    units = [unit("gadgets", fn=insert_gadget, requires_revision=R3)]

    first = seedguard.apply(db.url, seeds=units, alembic_config=ini, schema=True)
    second = seedguard.apply(db.url, seeds=units, alembic_config=ini, schema=True)

    assert first.migrated == list(REVISIONS)
    assert [u.name for u in first.applied] == ["gadgets"]
    assert second.migrated == [] and second.applied == []
    assert schema_log(db.url) == list(REVISIONS)
    assert db.execute("SELECT version_num FROM alembic_version")[0][0] == R3
    # seedguard's ledger has its own version table: alembic_version is the user's alone.
    assert count(db, "alembic_version") == 1


def test_schema_upgrade_keeps_existing_loggers_enabled(
        project: tuple[TestDatabase, str], caplog: pytest.LogCaptureFixture) -> None:
    db, ini = project
    app_logger = logging.getLogger("myapp.startup")  # exists before the upgrade runs
    caplog.set_level(logging.INFO)
    seedguard.apply(db.url, seeds=[unit("plain")], alembic_config=ini, schema=True)

    assert not app_logger.disabled
    assert not logging.getLogger("seedguard.runner").disabled
    assert "applied plain v1" in caplog.text  # logged after the user's env.py ran


def test_failing_user_migration_runs_no_seed(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    broken = Path(ini).parent / "alembic" / "versions" / f"{R3}_r3.py"
    broken.write_text(broken.read_text().replace(
        "def upgrade():", "def upgrade():\n    raise RuntimeError('migration r3 is broken')"))
    with pytest.raises(seedguard.SeedguardError,
                       match=r"alembic upgrade head failed.*r3 is broken"):
        seedguard.apply(db.url, seeds=[unit("plain")], alembic_config=ini, schema=True)
    assert db.ledger() == []
    assert db.effects() == []


# -- autogenerate ------------------------------------------------------------------------


def autogenerate(ini: str, *, filtered: bool) -> str:
    """Run ``alembic revision --autogenerate``; returns the generated upgrade() body."""
    from alembic import command
    from alembic.config import Config

    config = Config(ini)
    config.attributes["no_filter"] = not filtered
    script = command.revision(config, message="autogen", autogenerate=True)
    assert script is not None and not isinstance(script, list)
    source = Path(script.path).read_text()
    Path(script.path).unlink()
    body = source.split("def upgrade():", 1)[1].split("def downgrade():", 1)[0]
    return "\n".join(line.strip() for line in body.splitlines()
                     if line.strip() and not line.strip().startswith("#"))


def test_autogenerate_with_include_object_is_empty(project: tuple[TestDatabase, str]) -> None:
    db, ini = project
    alembic_upgrade(ini)
    seedguard.apply(db.url, seeds=[unit("plain")])  # creates the ledger and its version table
    assert {"seedguard_ledger", "seedguard_ledger_version"} <= db.tables()

    unfiltered = autogenerate(ini, filtered=False)
    assert "seedguard_ledger" in unfiltered  # without the hook alembic would drop them
    assert "seedguard_ledger_version" in unfiltered

    assert autogenerate(ini, filtered=True) == "pass"


def test_ignore_ledger_chains_a_user_hook() -> None:
    seen: list[str | None] = []

    def mine(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        seen.append(name)
        return name != "legacy"

    hook = seedguard.alembic.ignore_ledger("custom_ledger", include_object=mine)
    table = sa.Table("custom_ledger", sa.MetaData(), sa.Column("x", sa.Integer))
    assert not hook(table, "custom_ledger", "table", True, None)
    assert not hook(table, "custom_ledger_version", "table", True, None)
    assert not hook(table.c.x, "x", "column", True, None)  # a column of the ledger
    assert not hook(None, "legacy", "table", True, None)
    assert hook(None, "widgets", "table", True, None)
    assert seen == ["legacy", "widgets"]


# -- one lock for schema and seeds: 8 real processes ----------------------------------------


def cli_upgrade_schema(url: str, ini: str, seeds: str, lock_dir: str = "") -> dict[str, Any]:
    """Child: the real `seedguard upgrade --schema` command, run in this process.

    With ``lock_dir`` each child has a file lock of its own, as on separate
    hosts: only the database lock stands between them.
    """
    own_lock = ["--lock-path", f"{lock_dir}/{os.getpid()}.lock"] if lock_dir else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            seedguard.cli.main(["--url", url, "--seeds", seeds, "--alembic-config", ini,
                                "--lock-timeout", "90", *own_lock,
                                "upgrade", "--schema", "--json"])
            code: Any = 0
        except SystemExit as exit_:
            code = exit_.code
    document = json.loads(out.getvalue())
    return {"code": code, "migrated": document["migrated"],
            "applied": [item["name"] for item in document["applied"]]}


def plain_alembic(ini: str) -> str:
    """Child: a deploy step that runs `alembic upgrade head` with no lock."""
    alembic_upgrade(ini)
    return "ok"


SEEDS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("widgets", requires_revision="{r1}")
def widgets(session):
    session.execute(sa.text("INSERT INTO widgets (name) VALUES ('w')"))
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('widgets', 'x')"))

@seedguard.seed("gadgets", requires_revision="{r3}", after=["widgets"])
def gadgets(session):
    session.execute(sa.text("INSERT INTO gadgets (name, color) VALUES ('g', 'red')"))
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('gadgets', 'x')"))
'''


@pytest.fixture
def race_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Revision r1 holds its transaction open for a second (children inherit this)."""
    monkeypatch.setenv("R1_SLEEP", "1")


@pytest.mark.slow
@pytest.mark.usefixtures("race_window")
@pytest.mark.parametrize("locks", ["both", "database-lock-alone"])
def test_eight_processes_schema_and_seeds_each_once(server_db: TestDatabase, locks: str) -> None:
    db = server_db
    db.create_effects_table()
    create_schema_log(db.url)
    ini = str(make_project(db.tmp_path / "app", db.url))
    write_module(db.tmp_path, "deploy_seeds", SEEDS.format(r1=R1, r3=R3))
    lock_dir = str(db.tmp_path) if locks == "database-lock-alone" else ""

    outcomes = run_processes(8, cli_upgrade_schema, db.url, ini, "deploy_seeds", lock_dir,
                             paths=[db.tmp_path], timeout=180)

    errors = [value for status, value in outcomes if status != "ok"]
    assert errors == []
    results = [value for _, value in outcomes]
    assert [r["code"] for r in results] == [0] * 8
    assert sorted(rev for r in results for rev in r["migrated"]) == sorted(REVISIONS)
    assert sorted(name for r in results for name in r["applied"]) == ["gadgets", "widgets"]
    assert schema_log(db.url) == sorted(REVISIONS)  # every revision ran once
    assert sorted(db.effects()) == ["gadgets", "widgets"]  # every seed ran once
    assert db.execute("SELECT version_num FROM alembic_version")[0][0] == R3
    assert db.ledger() == [("gadgets", 1), ("widgets", 1)]


@pytest.mark.slow
@pytest.mark.usefixtures("race_window")
def test_eight_processes_plain_alembic_race(server_db: TestDatabase) -> None:
    """The control: without seedguard's lock the same start fails or applies twice."""
    db = server_db
    create_schema_log(db.url)
    ini = str(make_project(db.tmp_path / "app", db.url))

    outcomes = run_processes(8, plain_alembic, ini, timeout=180)

    failed = [value for status, value in outcomes if status != "ok"]
    log = schema_log(db.url)
    doubled = len(log) > len(REVISIONS)
    assert failed or doubled, (outcomes, log)


@pytest.mark.slow
@pytest.mark.usefixtures("race_window")
def test_eight_processes_schema_and_seeds_in_transaction_lock_mode(
        pg: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind PgBouncer (lock_mode="transaction") the upgrade holds the lock in one transaction."""
    db = pg
    db.create_effects_table()
    create_schema_log(db.url)
    ini = str(make_project(db.tmp_path / "app", db.url))
    write_module(db.tmp_path, "deploy_seeds", SEEDS.format(r1=R1, r3=R3))
    monkeypatch.setenv("SEEDGUARD_LOCK_MODE", "transaction")  # inherited by the children

    # A file lock per process, as on separate hosts: the transaction-level
    # database lock alone has to keep the upgrades apart.
    outcomes = run_processes(8, cli_upgrade_schema, db.url, ini, "deploy_seeds",
                             str(db.tmp_path), paths=[db.tmp_path], timeout=180)

    assert [status for status, _ in outcomes] == ["ok"] * 8, outcomes
    assert [value["code"] for _, value in outcomes] == [0] * 8
    assert sorted(rev for _, v in outcomes for rev in v["migrated"]) == sorted(REVISIONS)
    assert schema_log(db.url) == sorted(REVISIONS)
    assert sorted(db.effects()) == ["gadgets", "widgets"]
