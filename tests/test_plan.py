"""seedguard.plan() and `seedguard plan`: a rehearsal persists nothing, and
apply(plan=...) applies exactly what was reviewed or nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env, unit, write_module
from click.testing import CliRunner

import seedguard
from seedguard import Plan, PlanStale
from seedguard.cli import cli

ITEMS_DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)"


def insert_items(session: Any) -> None:
    session.execute(sa.text("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"))


def rename_one(session: Any) -> None:
    session.execute(sa.text("UPDATE items SET name = 'B' WHERE id = 2"))
    session.execute(sa.text("DELETE FROM items WHERE id = 3"))


def orm_items(session: Any) -> None:
    items = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("name", sa.String(50)))
    session.execute(items.insert(), [{"id": 10, "name": "x"}, {"id": 11, "name": "y"}])
    session.execute(items.update().where(items.c.id == 10).values(name="X"))


def failing(session: Any) -> None:
    session.execute(sa.text("INSERT INTO items (id, name) VALUES (99, 'z')"))
    raise RuntimeError("boom in the rehearsal")


@pytest.fixture
def items(db: TestDatabase) -> TestDatabase:
    db.execute(ITEMS_DDL)
    return db


def _units() -> list[Any]:
    return [unit("insert", fn=insert_items), unit("rename", fn=rename_one, after=["insert"]),
            unit("orm", fn=orm_items, after=["rename"])]


def _item_rows(db: TestDatabase) -> list[tuple[int, str]]:
    return sorted((row[0], row[1]) for row in db.execute("SELECT id, name FROM items"))


def test_a_rehearsal_persists_nothing_and_counts_what_apply_does(items: TestDatabase) -> None:
    planned = seedguard.plan(items.url, seeds=_units())

    assert items.ledger() == []
    assert "seedguard_ledger" not in items.tables()  # not even the ledger table
    assert _item_rows(items) == []
    assert [u.name for u in planned.units] == ["insert", "rename", "orm"]
    assert planned.ok
    # Later units are rehearsed on top of earlier ones.
    counts = {u.name: {t: vars(c) for t, c in u.rows.items()} for u in planned.units}
    assert counts["insert"] == {"items": {"inserted": 3, "updated": 0, "deleted": 0}}
    assert counts["rename"] == {"items": {"inserted": 0, "updated": 1, "deleted": 1}}
    assert counts["orm"] == {"items": {"inserted": 2, "updated": 1, "deleted": 0}}
    assert any("INSERT INTO items" in s for s in planned.units[0].statements)

    result = seedguard.apply(items.url, seeds=_units(), plan=planned)
    assert [u.name for u in result.applied] == ["insert", "rename", "orm"]
    assert _item_rows(items) == [(1, "a"), (2, "B"), (10, "X"), (11, "y")]


def test_nothing_pending_plans_nothing_and_applies_nothing(items: TestDatabase) -> None:
    seedguard.apply(items.url, seeds=_units())
    planned = seedguard.plan(items.url, seeds=_units())
    assert planned.units == []
    assert seedguard.apply(items.url, seeds=_units(), plan=planned).applied == []


def test_a_failing_unit_is_reported_and_stops_its_dependents(items: TestDatabase) -> None:
    units = [unit("insert", fn=insert_items), unit("broken", fn=failing, after=["insert"]),
             unit("after-broken", fn=rename_one, after=["broken"])]
    planned = seedguard.plan(items.url, seeds=units)
    assert not planned.ok
    by_name = {u.name: u for u in planned.units}
    assert by_name["insert"].rehearsed and not by_name["insert"].failed
    assert "boom in the rehearsal" in (by_name["broken"].error or "")
    assert by_name["after-broken"].not_rehearsed is not None
    assert "broken" in by_name["after-broken"].not_rehearsed
    assert _item_rows(items) == []


def test_non_transactional_units_are_listed_not_run(items: TestDatabase) -> None:
    units = [unit("insert", fn=insert_items),
             unit("bulk", fn=insert_items, transactional=False)]
    planned = seedguard.plan(items.url, seeds=units)
    bulk = planned.units[1]
    assert not bulk.rehearsed and "transactional=False" in (bulk.not_rehearsed or "")
    assert bulk.statements == []
    assert _item_rows(items) == []


def test_an_interrupted_unit_is_listed_with_the_command_that_settles_it(
        items: TestDatabase) -> None:
    units = [unit("insert", fn=insert_items, transactional=False)]
    seedguard.apply(items.url, seeds=[])  # the ledger, empty
    # What a non-transactional unit killed mid-way leaves: its row, running.
    items.execute("INSERT INTO seedguard_ledger (name, version, checksum, status, applied_at) "
                  "VALUES ('insert', 1, 'x', 'running', CURRENT_TIMESTAMP)")
    planned = seedguard.plan(items.url, seeds=units)
    reason = planned.units[0].not_rehearsed or ""
    # `seedguard resolve NAME` alone is a usage error: the advice names both outcomes.
    assert "`seedguard resolve insert --applied` or `seedguard resolve insert --retry`" in reason


@pytest.mark.parametrize("change", ["applied-since", "new-unit", "changed-code", "contexts"])
def test_a_stale_plan_applies_nothing(items: TestDatabase, change: str) -> None:
    units = _units()
    planned = seedguard.plan(items.url, seeds=units)
    contexts = None
    if change == "applied-since":
        seedguard.apply(items.url, seeds=units[:1])
    elif change == "new-unit":
        units = [*units, unit("extra", fn=insert_items, after=["orm"])]
    elif change == "changed-code":
        units = [unit("insert", fn=rename_one), *units[1:]]
    else:
        contexts = ["prod"]
    before = items.ledger()
    with pytest.raises(PlanStale) as raised:
        seedguard.apply(items.url, seeds=units, plan=planned, contexts=contexts)
    assert items.ledger() == before
    assert raised.value.changes
    assert "seedguard plan" in str(raised.value)


def test_the_digest_pins_ledger_rows_too(items: TestDatabase) -> None:
    units = [unit("insert", fn=insert_items), unit("rename", fn=rename_one, after=["insert"])]
    seedguard.apply(items.url, seeds=units[:1])
    planned = seedguard.plan(items.url, seeds=units)
    assert [u.name for u in planned.units] == ["rename"]
    # The applied row is rewritten (another checksum) behind the plan's back.
    items.execute("UPDATE seedguard_ledger SET checksum = 'ast1:other' WHERE name = 'insert'")
    with pytest.raises(PlanStale):
        seedguard.apply(items.url, seeds=units, plan=planned)


def test_secret_parameters_are_never_shown(items: TestDatabase) -> None:
    items.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, password_hash VARCHAR(80))")

    def accounts(session: Any) -> None:
        session.execute(sa.text("INSERT INTO accounts (id, password_hash) VALUES (:id, "
                                ":password_hash)"), {"id": 1, "password_hash": "S3cr3tHash!"})

    planned = seedguard.plan(items.url, seeds=[unit("accounts", fn=accounts)])
    text = json.dumps(planned.as_dict())
    assert "S3cr3tHash!" not in text
    assert "***" in text


def test_data_seed_counts_are_exact(items: TestDatabase) -> None:
    items.execute("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'old')")
    seed = seedguard.data_seed("items-data", table="items", key="id",
                               rows=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"},
                                     {"id": 3, "name": "c"}])
    planned = seedguard.plan(items.url, seeds=[seed])
    assert vars(planned.units[0].rows["items"]) == {"inserted": 1, "updated": 1, "deleted": 0}
    assert _item_rows(items) == [(1, "a"), (2, "old")]


def test_cli_plan_then_upgrade_with_the_plan(items: TestDatabase, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"planseeds_{items.kind}"  # a module imported once per process
    write_module(tmp_path, module, """
        import sqlalchemy as sa
        import seedguard

        @seedguard.seed("insert")
        def insert(session):
            session.execute(sa.text("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b')"))
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    plan_file = tmp_path / "plan.json"
    runner = CliRunner()
    args = ["--url", items.url, "--seeds", module]
    shown = runner.invoke(cli, [*args, "plan", "--out", str(plan_file)])
    assert shown.exit_code == 0, shown.output
    assert "insert v1" in shown.output and "items: 2 inserted" in shown.output
    assert f"upgrade --plan {plan_file}" in shown.output
    assert items.ledger() == []

    as_json = runner.invoke(cli, [*args, "plan", "--json"])
    document = json.loads(as_json.output)
    assert document["command"] == "plan" and document["units"][0]["name"] == "insert"
    assert document["digest"] == json.loads(plan_file.read_text())["digest"]

    applied = runner.invoke(cli, [*args, "upgrade", "--plan", str(plan_file)])
    assert applied.exit_code == 0, applied.output
    assert items.ledger() == [("insert", 1)]
    # Applied now: the same plan is stale (its unit is no longer pending).
    again = runner.invoke(cli, [*args, "upgrade", "--plan", str(plan_file)])
    assert again.exit_code == 2
    assert "no longer pending" in again.output


def test_cli_rejects_a_file_that_is_not_a_plan(items: TestDatabase, tmp_path: Path) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text('{"units": []}')
    result = CliRunner().invoke(cli, ["--url", items.url, "--seeds", "json", "upgrade",
                                      "--plan", str(bogus)])
    assert result.exit_code == 2
    assert "not a seedguard plan" in result.output


def test_plan_round_trips_through_its_file(items: TestDatabase, tmp_path: Path) -> None:
    planned = seedguard.plan(items.url, seeds=_units())
    path = tmp_path / "plan.json"
    planned.save(path)
    assert Plan.load(path) == planned


REHEARSAL_CHILD = """
import sqlalchemy as sa, seedguard, sys, time

@seedguard.seed("slow")
def slow(session):
    session.execute(sa.text("INSERT INTO items (id, name) VALUES (1, 'a')"))
    session.flush()
    print("inside", flush=True)
    time.sleep(60)

seedguard.plan(sys.argv[1])
"""


def test_a_rehearsal_killed_mid_way_leaves_nothing(items: TestDatabase, tmp_path: Path) -> None:
    script = tmp_path / "rehearse.py"
    script.write_text(textwrap.dedent(REHEARSAL_CHILD))
    child = subprocess.Popen([sys.executable, str(script), items.url], stdout=subprocess.PIPE,
                             text=True, env=child_env(tmp_path))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inside"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    deadline = time.monotonic() + 30
    while True:  # the server notices the dead connection and discards its transaction
        try:
            rows = _item_rows(items)
            break
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert rows == []
    assert items.ledger() == []
    # And a real apply is free to run at once.
    assert [u.name for u in seedguard.apply(items.url, seeds=_units()).applied] == \
        ["insert", "rename", "orm"]


def test_a_write_through_another_engine_is_refused_in_a_rehearsal(items: TestDatabase) -> None:
    other = items.engine()

    def around(session: Any) -> None:
        with other.begin() as conn:  # the app's own engine: would commit on its own
            conn.execute(sa.text("INSERT INTO items (id, name) VALUES (7, 'escaped')"))

    planned = seedguard.plan(items.url, seeds=[unit("around", fn=around)])
    assert planned.units[0].failed
    assert "UnitEscape" in (planned.units[0].error or "")
    assert _item_rows(items) == []


def test_a_unit_that_commits_its_rehearsal_is_reported(items: TestDatabase) -> None:
    def commits(session: Any) -> None:
        session.execute(sa.text("INSERT INTO items (id, name) VALUES (5, 'early')"))
        session.connection().connection.dbapi_connection.commit()  # around every guard

    units = [unit("commits", fn=commits), unit("later", fn=insert_items)]
    planned = seedguard.plan(items.url, seeds=units)
    first, later = planned.units
    assert not planned.ok
    assert "MAY HAVE BEEN COMMITTED" in (first.error or "")
    assert later.not_rehearsed is not None and "stopped at 'commits'" in later.not_rehearsed
    # The truth, as the plan says: the raw commit went through.
    assert _item_rows(items) == [(5, "early")]
