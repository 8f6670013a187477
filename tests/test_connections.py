"""Lost connections: a connection killed from outside, on PostgreSQL and MariaDB.

Units run on the database lock's own session (one connection per applier),
so "the unit's connection" and "the lock connection" are the same session;
killing it mid-unit fails that unit, killing it between units is caught by
the lock check before the next unit.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, effect, unit

import seedguard
from seedguard import SeedFailed, SeedguardError
from seedguard.events import UnitFinished

OWN_ID = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}


def kill_session(db: TestDatabase, session_id: int) -> None:
    """Terminate a server session from a separate connection, as an operator would."""
    if db.kind == "postgresql":
        rows = db.execute("SELECT pg_terminate_backend(:pid)", pid=session_id)
        assert rows[0][0] is True
    else:
        db.execute(f"KILL {int(session_id)}")


@pytest.fixture
def fx(server_db: TestDatabase) -> TestDatabase:
    server_db.create_effects_table()
    return server_db


def test_unit_connection_killed_mid_unit(fx: TestDatabase) -> None:
    def killed_mid_way(session: Any) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('victim', 'half')"))
        kill_session(fx, session.execute(sa.text(OWN_ID[fx.kind])).scalar())
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('victim', 'rest')"))

    units = [unit("before"), unit("victim", fn=killed_mid_way, after=["before"]),
             unit("after", after=["victim"])]
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(fx.url, seeds=units, lock_timeout=5)

    assert info.value.unit.name == "victim"
    assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    message = str(info.value)
    assert "'victim'" in message and "rolled back" in message and "run again" in message
    assert fx.effects() == ["before"]  # nothing of the victim half-written
    assert fx.ledger() == [("before", 1)]

    # A clean retry: the locks were freed with the dead session, nothing to repair.
    fixed = [units[0], unit("victim", after=["before"]), units[2]]
    result = seedguard.apply(fx.url, seeds=fixed, lock_timeout=2)
    assert [u.name for u in result.applied] == ["victim", "after"]
    assert sorted(fx.effects()) == ["after", "before", "victim"]


def test_lock_connection_killed_between_units_stops_the_run(fx: TestDatabase) -> None:
    seen: dict[str, int] = {}

    def first(session: Any) -> None:
        seen["session"] = session.execute(sa.text(OWN_ID[fx.kind])).scalar()
        effect("first")(session)

    def on_event(event: object) -> None:
        # After "first" committed, before "second" starts: the lock is gone.
        if isinstance(event, UnitFinished) and event.unit.name == "first":
            kill_session(fx, seen["session"])

    units = [unit("first", fn=first), unit("second"), unit("third")]
    with pytest.raises(SeedguardError, match="lost the database lock") as info:
        seedguard.apply(fx.url, seeds=units, lock_timeout=5, on_event=on_event)
    assert "run again" in str(info.value)
    assert fx.effects() == ["first"]  # stopped before running "second" unprotected
    assert fx.ledger() == [("first", 1)]

    result = seedguard.apply(fx.url, seeds=units, lock_timeout=2)
    assert [u.name for u in result.applied] == ["second", "third"]
    assert sorted(fx.effects()) == ["first", "second", "third"]


def test_one_connection_per_applier(fx: TestDatabase) -> None:
    """Units run on the lock's session: an applier holds one connection, not two."""
    from seedguard.locks import MySQLLock, lock_key

    engine = fx.engine()
    lock = MySQLLock(engine, lock_key(engine, "seedguard_ledger", None))
    seen: list[tuple[int, set[int]]] = []

    def probe(session: Any) -> None:
        own = session.execute(sa.text(OWN_ID[fx.kind])).scalar()
        if fx.kind == "postgresql":
            holders = {row[0] for row in fx.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")}
        else:
            holders = {row[0] for row in fx.execute("SELECT IS_USED_LOCK(:n)",
                                                    n=lock.lock_name)}
        seen.append((own, holders))

    seedguard.apply(fx.url, seeds=[unit("a", fn=probe), unit("b", fn=probe)])
    assert len(seen) == 2
    (first, holders_a), (second, holders_b) = seen
    assert first == second  # both units on one session...
    assert holders_a == holders_b == {first}  # ...the one holding the database lock


@pytest.mark.parametrize("lock_mode", ["session", "transaction"])
def test_units_keep_the_applications_session_settings(pg: TestDatabase, lock_mode: str) -> None:
    """Units run on the lock's session: seedguard's lock wait settings must not leak into them."""
    pg.create_effects_table()
    engine = pg.engine(connect_args={"options": "-c lock_timeout=1234ms"})
    seen: list[str] = []

    def probe(session: Any) -> None:
        seen.append(session.execute(sa.text("SHOW lock_timeout")).scalar())

    seedguard.apply(engine, seeds=[unit("a", fn=probe), unit("b", fn=probe)],
                    lock_timeout=5, lock_mode=lock_mode)
    assert seen == ["1234ms", "1234ms"]
    with engine.connect() as conn:  # the pooled connection the run used, handed back clean
        assert not conn.execute(sa.text("SHOW application_name")).scalar().startswith("seedguard")
        assert conn.execute(sa.text("SHOW lock_timeout")).scalar() == "1234ms"
