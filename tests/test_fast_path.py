"""The no-op fast path: the ledger compared with the units as a whole, in one statement.

``Ledger.read_against`` (the rows compared as sets; on SQLite, from the third
look on one connection, the database compares) must plan exactly as
``Ledger.read`` does, for every state a ledger row can be in, on either
path; a start-up with nothing to do stays one query, drift included.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, unit

import seedguard
from seedguard.ledger import Ledger
from seedguard.runner import plan

LEDGER = "seedguard_ledger"


def _summary(units: list[Any], state: Any) -> dict[str, list[str]]:
    checksums = {u.name: u.checksum() for u in units}
    result = plan(units, state, checksums)
    return {
        "pending": [u.name for u in result.pending],
        "skipped": [u.name for u in result.skipped],
        "drifted": [d.name for d in result.drifted],
        "ahead": [u.name for u in result.ahead],
        "blocked": [u.name for u in result.blocked],
    }


def _expected(units: list[Any]) -> list[tuple[str, int, str]]:
    return [(u.name, u.version, u.checksum()) for u in units]


def _applied(db: TestDatabase, names: list[str]) -> list[Any]:
    db.create_effects_table()
    units = [unit(name) for name in names]
    seedguard.apply(db.url, seeds=units)
    return units


def test_all_applied_needs_no_plan(db: TestDatabase) -> None:
    units = _applied(db, ["a", "b", "c"])
    engine = db.engine()
    with engine.connect() as conn:
        first = Ledger(LEDGER).read_against(conn, _expected(units))
        again = Ledger(LEDGER).read_against(conn, _expected(units))
    assert first is not None and first.all_applied
    assert again is not None and again.all_applied


def test_sqlite_compares_in_the_database_from_the_third_look(db: TestDatabase) -> None:
    units = _applied(db, ["a", "b"])
    engine = db.engine()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, *a: statements.append(stmt))
    ledger = Ledger(LEDGER)
    with engine.connect() as conn:
        for _ in range(4):
            compared = ledger.read_against(conn, _expected(units))
            assert compared is not None and compared.all_applied
            conn.rollback()
            # A change (the rows still all applied), so that each look reads.
            db.execute(f"UPDATE {LEDGER} SET duration_ms = duration_ms + 1 WHERE name = 'a'")
    in_database = ["NOT IN" in statement for statement in statements if LEDGER in statement]
    assert in_database == ([False, False, True, True] if db.kind == "sqlite" else [False] * 4)


# Changes made on the looking connection itself: SQLite's data_version does not
# count them, its total_changes and schema_version do.
SAME_CONNECTION = {
    "drifted": [f"UPDATE {LEDGER} SET checksum = 'ast1:{'0' * 64}' WHERE name = 'b'"],
    "rolled-back-delete": [f"DELETE FROM {LEDGER} WHERE name = 'b'"],
    "dropped": [f"DROP TABLE {LEDGER}"],
}


@pytest.mark.parametrize("where", ["other", *SAME_CONNECTION])
def test_an_unchanged_database_is_not_read_again(db: TestDatabase, where: str) -> None:
    # On SQLite a look that found every unit applied answers again without
    # reading the ledger while the database says nothing changed; any change,
    # from this connection or another, rolled back or not, is read.
    units = _applied(db, ["a", "b", "c"])
    engine = db.engine()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, *a: statements.append(stmt))
    ledger = Ledger(LEDGER)
    with engine.connect() as conn:
        for _ in range(3):
            compared = ledger.read_against(conn, _expected(units))
            assert compared is not None and compared.all_applied
        reads = len(statements)
        assert reads == (1 if db.kind == "sqlite" else 3)
        if where == "other":
            conn.rollback()  # MariaDB's snapshot would hide the change
            db.execute(CHANGES["drifted"][0])
        else:
            for statement in SAME_CONNECTION[where]:
                conn.exec_driver_sql(statement)
            if where == "rolled-back-delete":
                conn.rollback()
            else:
                conn.commit()
        compared = ledger.read_against(conn, _expected(units))
        assert len(statements) > reads + len(SAME_CONNECTION.get(where, []))
        full = ledger.read(conn, full=False)
    if where == "dropped":
        assert compared is None and full is None
    elif where == "rolled-back-delete":
        assert compared is not None and compared.all_applied
    else:
        assert compared is not None and not compared.all_applied
        assert full is not None and _summary(units, compared.state) == _summary(units, full)


_INSERT = (f"INSERT INTO {LEDGER} (name, version, checksum, status, applied_at) "
           "VALUES ('{name}', {version}, 'ast1:x', 'applied', CURRENT_TIMESTAMP)")
# The ways a ledger's rows can differ from "every unit applied, unchanged".
CHANGES = {
    "drifted": [f"UPDATE {LEDGER} SET checksum = 'ast1:{'0' * 64}' WHERE name = 'b'"],
    "running": [f"UPDATE {LEDGER} SET status = 'running' WHERE name = 'b'"],
    "stamped-without-checksum": [f"UPDATE {LEDGER} SET checksum = NULL WHERE name = 'b'"],
    "ahead": [f"DELETE FROM {LEDGER} WHERE name = 'b'", _INSERT.format(name="b", version=7)],
    "orphan": [_INSERT.format(name="gone", version=1)],
    "missing": [f"DELETE FROM {LEDGER} WHERE name = 'c'"],
    "other-version": [_INSERT.format(name="a", version=2)],
    # The same rows, one rewritten (PostgreSQL then reads it last): all still applied.
    "rewritten": [f"UPDATE {LEDGER} SET duration_ms = 7 WHERE name = 'a'"],
}


def _change(db: TestDatabase, change: str) -> None:
    for statement in CHANGES[change]:
        db.execute(statement)


@pytest.mark.parametrize("look", ["first", "third"])
@pytest.mark.parametrize("change", ["drifted", "running", "stamped-without-checksum", "ahead",
                                    "orphan", "missing", "other-version"])
def test_read_against_plans_exactly_like_read(db: TestDatabase, change: str, look: str) -> None:
    units = _applied(db, ["a", "b", "c", "d"])
    _change(db, change)
    ledger = Ledger(LEDGER)
    in_database = db.kind == "sqlite" and look == "third"
    with db.engine().connect() as conn:
        full = ledger.read(conn, full=False)
        for _ in range(3 if look == "third" else 1):
            compared = ledger.read_against(conn, _expected(units))
    assert full is not None
    if change in ("missing", "ahead") and in_database:
        # A unit without a row of its version: the caller reads the rows.
        assert compared is None
        return
    if change in ("orphan", "other-version"):
        # Extra rows do not matter when every unit has its own applied row.
        assert compared is not None and compared.all_applied
        assert _summary(units, full)["skipped"] == ["a", "b", "c", "d"]
        return
    assert compared is not None and not compared.all_applied
    assert _summary(units, compared.state) == _summary(units, full)
    assert dict(compared.state) == {key: full[key] for key in full}


@pytest.mark.parametrize("change", ["drifted", "running", "stamped-without-checksum",
                                    "missing", "rewritten"])
def test_a_change_after_an_all_applied_look_is_seen(db: TestDatabase, change: str) -> None:
    # A look that found everything applied remembers the rows it read, so that
    # the next look can compare lists instead of sets: any change must still count.
    units = _applied(db, ["a", "b", "c", "d"])
    ledger = Ledger(LEDGER)
    with db.engine().connect() as conn:
        for _ in range(2):
            compared = ledger.read_against(conn, _expected(units))
            assert compared is not None and compared.all_applied
        conn.rollback()
        _change(db, change)
        full = ledger.read(conn, full=False)
        compared = ledger.read_against(conn, _expected(units))
    assert full is not None
    if change == "rewritten":
        assert compared is not None and compared.all_applied
        return
    if compared is None:  # SQLite's third look, a unit without a row: read() decides
        assert change == "missing" and db.kind == "sqlite"
        return
    assert not compared.all_applied
    assert _summary(units, compared.state) == _summary(units, full)


def test_values_that_are_no_safe_literal_are_never_written_into_sql(db: TestDatabase) -> None:
    _applied(db, ["a"])
    ledger = Ledger(LEDGER)
    hostile = [("a", 1, "x'); DROP TABLE effects; --")]
    with db.engine().connect() as conn:
        first = ledger.read_against(conn, hostile)
        ledger.read_against(conn, hostile)
        again = ledger.read_against(conn, hostile)
        assert ledger.read_against(conn, []) is None
    assert first is not None and not first.all_applied  # compared in Python
    if db.kind == "sqlite":
        assert again is None  # it would have been a literal in the statement
    else:
        assert again is not None and not again.all_applied
    assert db.effects() == ["a"]


def test_a_missing_ledger_is_none(db: TestDatabase) -> None:
    with db.engine().connect() as conn:
        assert Ledger(LEDGER).read_against(conn, [("a", 1, "ast1:x")]) is None


def test_no_op_with_drift_is_still_one_query(db: TestDatabase) -> None:
    units = _applied(db, ["roles", "users"])
    db.execute(f"UPDATE {LEDGER} SET checksum = 'ast1:{'0' * 64}' WHERE name = 'users'")
    engine = db.engine()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, *a: statements.append(stmt))
    result = seedguard.apply(engine, seeds=units)
    assert [d.name for d in result.drifted] == ["users"]
    assert [u.name for u in result.skipped] == ["roles", "users"] and not result.applied
    assert len(statements) == 1, statements


def test_a_pending_unit_is_still_applied(db: TestDatabase) -> None:
    units = _applied(db, ["roles"])
    more = [*units, unit("users")]
    result = seedguard.apply(db.url, seeds=more)
    assert [u.name for u in result.applied] == ["users"]
    assert db.effects() == ["roles", "users"]


def test_a_ledger_from_a_newer_seedguard_is_refused_by_the_fast_path(db: TestDatabase) -> None:
    units = _applied(db, ["roles"])
    db.execute(f"UPDATE {LEDGER}_version SET version_num = 'sg9999'")
    with pytest.raises(seedguard.SeedguardError, match="sg9999"):
        seedguard.apply(db.url, seeds=units)


def test_the_fast_path_sees_a_data_seeds_new_file(db: TestDatabase) -> None:
    # Code checksums are gathered once per process; a data seed's file is
    # hashed on every run, so an edit between two calls is pending work.
    db.create_effects_table()
    path = db.tmp_path / "roles.csv"
    path.write_text("name\nadmin\n")
    db.execute("CREATE TABLE roles (name VARCHAR(50) PRIMARY KEY)")
    roles = seedguard.data_seed("roles", path=path, table="roles", key="name")
    assert [a.name for a in seedguard.apply(db.url, seeds=[roles]).applied] == ["roles"]
    assert seedguard.apply(db.url, seeds=[roles]).skipped == [roles]
    path.write_text("name\nadmin\neditor\n")
    assert [a.name for a in seedguard.apply(db.url, seeds=[roles]).applied] == ["roles"]
    assert sorted(r[0] for r in db.execute("SELECT name FROM roles")) == ["admin", "editor"]
