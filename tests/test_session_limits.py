"""seedguard's own sessions survive the server's limits on sessions and statements.

A role, a user or a database may carry limits that end a session or a
statement: PostgreSQL ``idle_session_timeout``,
``idle_in_transaction_session_timeout``, ``statement_timeout`` and
``lock_timeout``; MariaDB ``wait_timeout`` and ``max_statement_time``. Each
test sets one on a role or user it creates and drops itself (never on the
shared accounts or the shared database), shorter than what the appliers do:

- a holder whose unit takes longer than the limit keeps its lock (its lock's
  and its heartbeat's sessions are not ended), and a second applier waits it
  out and then applies;
- a unit's own statement that runs into ``statement_timeout`` /
  ``max_statement_time`` fails as a ``SeedFailed`` naming the setting;
- a session the server did end gives a ``SeedguardError`` naming the setting.

MariaDB has no per-user ``wait_timeout``: the application's engine sets it
for its sessions (``init_command``), as an application would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import EFFECTS_DDL, TestDatabase, child_env, unit

import seedguard
from seedguard import SeedFailed, SeedguardError

# Longer than every limit below: the holder's unit, and so the waiter's wait.
HOLD = 3.0


@dataclass
class Limited:
    """A fresh database, and a login that the server holds to one ``setting``."""

    db: TestDatabase
    setting: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    def engine(self, **options: Any) -> sa.Engine:
        """An application's engine logging in as the limited login (disposed by ``db``)."""
        engine = sa.create_engine(self.url, connect_args=self.connect_args, **options)
        self.db._engines.append(engine)
        return engine

    def create_effects_table(self) -> None:
        """The effects table, owned by the limited login (it writes to it)."""
        with self.engine(poolclass=sa.pool.NullPool).begin() as conn:
            conn.execute(sa.text(EFFECTS_DDL))


# (database, setting, value): each value is well under HOLD.
LIMITS = [
    ("postgresql", "idle_session_timeout", "500ms"),
    ("postgresql", "idle_in_transaction_session_timeout", "500ms"),
    ("postgresql", "statement_timeout", "1s"),
    ("postgresql", "lock_timeout", "500ms"),
    ("mariadb", "wait_timeout", "1"),
    ("mariadb", "max_statement_time", "1"),
]


def _limited(kind: str, setting: str, value: str, tmp_path: Path) -> Iterator[Limited]:
    from conftest import make_database, selected_databases

    if kind not in selected_databases():
        pytest.skip(f"{kind} not in SEEDGUARD_TEST_DATABASES")
    for db in make_database(kind, tmp_path):
        name = sa.engine.make_url(db.url).database
        login = f"sg_lim_{uuid.uuid4().hex[:8]}"
        if kind == "postgresql":
            db.execute(f"CREATE ROLE {login} LOGIN")
            try:
                # The owner of the database owns its public schema (PostgreSQL 15).
                db.execute(f"ALTER DATABASE {name} OWNER TO {login}")
                db.execute(f"ALTER ROLE {login} SET {setting} = '{value}'")
                url = sa.engine.make_url(db.url).set(username=login)
                yield Limited(db, setting, url.render_as_string(hide_password=False))
            finally:
                db.dispose()
                db.execute(f"REASSIGN OWNED BY {login} TO postgres")
                db.execute(f"DROP OWNED BY {login}")
                db.execute(f"DROP ROLE {login}")
            return
        limit = f" WITH MAX_STATEMENT_TIME {value}" if setting == "max_statement_time" else ""
        db.execute(f"CREATE USER '{login}'@'%'{limit}")
        try:
            db.execute(f"GRANT ALL ON {name}.* TO '{login}'@'%'")
            url = sa.engine.make_url(db.url).set(username=login, password="")
            args = ({"init_command": f"SET SESSION wait_timeout = {value}"}
                    if setting == "wait_timeout" else {})
            yield Limited(db, setting, url.render_as_string(hide_password=False), args)
        finally:
            db.dispose()
            db.execute(f"DROP USER IF EXISTS '{login}'@'%'")


@pytest.fixture(params=LIMITS, ids=[setting for _, setting, _ in LIMITS])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Limited]:
    kind, setting, value = request.param
    yield from _limited(kind, setting, value, tmp_path)


HOLDER = """
import json, sys, time
import sqlalchemy as sa
import seedguard

url, marker, connect_args, work, hold = (sys.argv[1], sys.argv[2], json.loads(sys.argv[3]),
                                         sys.argv[4], float(sys.argv[5]))

def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'holder')"))
    open(marker, "w").close()
    if work == "sql":  # statements each shorter than the statement limit, together longer
        sleep = ("SELECT pg_sleep(:s)" if session.bind.dialect.name == "postgresql"
                 else "SELECT SLEEP(:s)")
        for _ in range(4):
            session.execute(sa.text(sleep), {"s": hold / 4})
    else:  # the unit's Python: its transaction (and the lock's session) idles meanwhile
        time.sleep(hold)

engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
unit = seedguard.SeedUnit(name="slow", fn=slow, origin="holder:slow", identity="holder:slow")
try:
    # The shortest lease: the heartbeat renews every second, idling in between.
    seedguard.apply(engine, seeds=[unit], lease=5, lock_path=marker + ".lock", lock_timeout=60)
except seedguard.SeedguardError as err:
    print(f"holder: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(1)
print("holder: applied")
"""

# What the holder's unit does for HOLD seconds, to run into each limit.
WORK = {"statement_timeout": "sql", "max_statement_time": "sql"}


def _start_holder(limited: Limited, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(script), limited.url, str(marker),
         json.dumps(limited.connect_args), WORK.get(limited.setting, "python"), str(HOLD)],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the holder did not start its unit: {out}{err}")
        time.sleep(0.02)
    return proc


def _waiter_unit() -> seedguard.SeedUnit:
    def slow(session: sa.orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'waiter')"))

    return seedguard.SeedUnit(name="slow", fn=slow, origin="holder:slow",
                              identity="holder:slow")


def test_a_waiter_waits_out_a_holder_longer_than_the_limit_then_applies(
        limited: Limited, tmp_path: Path) -> None:
    limited.create_effects_table()
    engine = limited.engine(pool_pre_ping=True)
    seedguard.apply(engine, seeds=[], lock_path=tmp_path / "first.lock")  # the ledger exists
    proc = _start_holder(limited, tmp_path)
    try:
        began = time.monotonic()
        result = seedguard.apply(engine, seeds=[_waiter_unit(), unit("after")],
                                 lock_timeout=60, lock_path=tmp_path / "waiter.lock")
        waited = time.monotonic() - began
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert [u.name for u in result.applied] == ["after"]
    assert waited > 1.5, waited  # it did wait for the holder, past the limit
    assert limited.db.ledger() == [("after", 1), ("slow", 1)]
    assert sorted(limited.db.execute("SELECT unit, value FROM effects")) == [
        ("after", "done"), ("slow", "holder")]


STATEMENT_LIMITS = [(kind, setting, value) for kind, setting, value in LIMITS
                    if setting in ("statement_timeout", "max_statement_time")]


@pytest.mark.parametrize(("kind", "setting", "value"), STATEMENT_LIMITS,
                         ids=[setting for _, setting, _ in STATEMENT_LIMITS])
def test_a_units_statement_past_the_limit_fails_naming_the_setting(
        kind: str, setting: str, value: str, tmp_path: Path) -> None:
    def too_long(session: sa.orm.Session) -> None:
        postgresql = session.get_bind().dialect.name == "postgresql"
        session.execute(sa.text("SELECT pg_sleep(2)" if postgresql else "SELECT SLEEP(2)"))

    for limited in _limited(kind, setting, value, tmp_path):
        limited.create_effects_table()
        engine = limited.engine()
        with pytest.raises(SeedFailed) as info:
            seedguard.apply(engine, seeds=[unit("roles"), unit("long", fn=too_long)],
                            lock_path=tmp_path / "apply.lock")
        assert setting in str(info.value), info.value
        assert info.value.rolled_back is True
        assert info.value.unit is not None and info.value.unit.name == "long"
        # The unit before it applied; the lock was released: a rerun resumes.
        assert limited.db.ledger() == [("roles", 1)]
        again = seedguard.apply(engine, seeds=[unit("roles")], lock_timeout=5,
                                lock_path=tmp_path / "apply.lock")
        assert again.applied == []


def test_a_session_the_server_ended_names_wait_timeout(tmp_path: Path) -> None:
    for limited in _limited("mariadb", "wait_timeout", "1", tmp_path):
        engine = limited.engine()  # the app's engine, without pool_pre_ping
        with engine.connect() as conn:  # a pooled connection that the server will close
            conn.execute(sa.text("SELECT 1"))
        time.sleep(2.5)
        with pytest.raises(SeedguardError, match="wait_timeout"):
            seedguard.apply(engine, seeds=[unit("roles")], lock_path=tmp_path / "apply.lock")
