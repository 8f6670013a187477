"""Behind PgBouncer in transaction pooling: the safe lock mode, and the unsafe one caught.

The fixture starts Debian's ``pgbouncer`` (``apt-get install pgbouncer``;
``.ci/run`` installs it) on a free loopback port in front of the local
PostgreSQL, with ``pool_mode = transaction`` and ``server_round_robin = 1``,
so consecutive transactions of one client land on different server sessions
once the pool holds several: exactly the condition that makes a session-level
advisory lock meaningless. Connections go through psycopg2: PgBouncer 1.18
cannot carry psycopg 3's server-side prepared statements.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, run_processes, seeds_source, unit, write_module
from conftest import PG_URL, require_servers

import seedguard
from seedguard import ConfigError

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def pgbouncer_port() -> Iterator[int]:
    """A PgBouncer in transaction pooling mode in front of the test PostgreSQL server."""
    if not os.path.exists(PGBOUNCER):
        message = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if require_servers():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = sa.engine.make_url(PG_URL)
    port = _free_port()
    # PgBouncer refuses to run as root; it drops to the postgres user with -u,
    # which must be able to read the configuration.
    directory = Path(tempfile.mkdtemp(prefix="sg-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{server.username}" ""\n')
    (directory / "pgbouncer.ini").write_text(f"""
[databases]
* = host={server.host or '127.0.0.1'} port={server.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / 'users.txt'}
pool_mode = transaction
server_round_robin = 1
default_pool_size = 20
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
""")
    for path in directory.iterdir():
        path.chmod(0o644)
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.getuid() == 0:
        command[1:1] = ["-u", "postgres"]
    log_path = directory / "pgbouncer.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"pgbouncer did not listen on {port}: {log_path.read_text()}")
        if proc.poll() is not None:
            pytest.fail(f"pgbouncer exited: {log_path.read_text()}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def bouncer_url(pg: TestDatabase, port: int) -> str:
    url = sa.engine.make_url(pg.url).set(drivername="postgresql+psycopg2", host="127.0.0.1",
                                          port=port)
    return url.render_as_string(hide_password=False)


def _warm_pool(url: str, sessions: int = 4) -> None:
    """Open several server sessions at once so round robin has somewhere to go."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conns = [engine.connect() for _ in range(sessions)]
    try:
        for conn in conns:
            conn.execute(sa.text("SELECT 1"))
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()
        engine.dispose()


def test_pooler_really_moves_a_client_between_server_sessions(pg: TestDatabase,
                                                              pgbouncer_port: int) -> None:
    # The premise of this file: without it, the tests below would prove nothing.
    url = bouncer_url(pg, pgbouncer_port)
    _warm_pool(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        pids = set()
        for _ in range(6):
            pids.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
            conn.commit()
    engine.dispose()
    assert len(pids) > 1


def test_session_mode_through_the_pooler_fails_clearly(pg: TestDatabase,
                                                       pgbouncer_port: int) -> None:
    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)
    _warm_pool(url)
    with pytest.raises(ConfigError, match='lock_mode="transaction"') as info:
        seedguard.apply(url, seeds=[unit("a")], lock_path=pg.tmp_path / "lock",
                        lock_timeout=10)
    assert "pooler" in str(info.value)
    assert pg.effects() == []  # stopped before any work
    # The same call in the safe mode works through the same pooler.
    result = seedguard.apply(url, seeds=[unit("a")], lock_path=pg.tmp_path / "lock",
                             lock_mode="transaction", lock_timeout=10)
    assert [u.name for u in result.applied] == ["a"]
    assert pg.effects() == ["a"]


def test_transaction_mode_is_refused_where_there_is_no_transaction_lock(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        seedguard.apply(f"sqlite:///{tmp_path / 'x.db'}", seeds=[unit("a")],
                        lock_mode="transaction")


def test_lock_mode_from_environment(pg: TestDatabase, pgbouncer_port: int,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)
    _warm_pool(url)
    monkeypatch.setenv("SEEDGUARD_LOCK_MODE", "transaction")
    result = seedguard.apply(url, seeds=[unit("env")], lock_path=pg.tmp_path / "lock")
    assert [u.name for u in result.applied] == ["env"]


def apply_own_lock_file(url: str, seeds: str, lock_dir: str) -> list[str]:
    """Child: a lock file per process, as on separate hosts; only the database lock serialises."""
    result = seedguard.apply(url, seeds=seeds, lock_mode="transaction", lock_timeout=60,
                             lock_path=os.path.join(lock_dir, f"{os.getpid()}.lock"))
    return [item.name for item in result.applied]


PROCESSES = 8
UNITS = 12


def test_exactly_once_with_8_processes_through_pgbouncer(pg: TestDatabase, pgbouncer_port: int,
                                                          tmp_path: Path) -> None:
    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)
    names = [f"unit-{i:02d}" for i in range(UNITS)]
    module = f"pgb_seeds_{tmp_path.name.replace('-', '_')}"
    # A little work per unit keeps several appliers inside the same unit at once.
    write_module(tmp_path, module, seeds_source(names, sleep=0.02))
    started = time.monotonic()
    outcomes = run_processes(PROCESSES, apply_own_lock_file, url, module, str(tmp_path),
                             paths=[tmp_path, HERE], timeout=120)
    elapsed = time.monotonic() - started
    errors = [value for status, value in outcomes if status != "ok"]
    assert errors == []
    applied = [name for _, value in outcomes for name in value]
    assert sorted(applied) == names  # each unit applied by exactly one process
    assert sorted(pg.effects()) == names  # and its work done exactly once
    assert pg.ledger() == [(name, 1) for name in names]
    print(f"pgbouncer: {PROCESSES} processes, {UNITS} units, exactly once, {elapsed:.1f} s")


def test_killed_applier_behind_pgbouncer_leaves_no_lock(pg: TestDatabase, pgbouncer_port: int,
                                                         tmp_path: Path) -> None:
    """SIGKILL inside a unit (holding the transaction lock): the next run gets it in < 2 s."""
    import signal

    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)
    read_fd, write_fd = os.pipe()

    def parks(session: Any) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'x')"))
        os.write(write_fd, b"k")
        time.sleep(60)

    pid = os.fork()
    if pid == 0:
        try:
            seedguard.apply(url, seeds=[unit("first"), unit("slow", fn=parks)],
                            lock_mode="transaction", lock_path=tmp_path / "child.lock")
        finally:
            os._exit(1)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 1) == b"k"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
    assert pg.effects() == ["first"] and pg.ledger() == [("first", 1)]
    started = time.monotonic()
    result = seedguard.apply(url, seeds=[unit("first"), unit("slow")], lock_mode="transaction",
                             lock_path=tmp_path / "parent.lock", lock_timeout=2)
    assert time.monotonic() - started < 3
    assert [u.name for u in result.applied] == ["slow"]
    assert sorted(pg.effects()) == ["first", "slow"]


def test_interrupted_non_transactional_unit_blocks_in_transaction_mode(
        pg: TestDatabase, pgbouncer_port: int) -> None:
    from seedguard import UnitBlocked

    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)
    seedguard.apply(url, seeds=[unit("a")], lock_mode="transaction")
    # What an applier killed mid-way through a non-transactional unit leaves behind:
    pg.execute("INSERT INTO seedguard_ledger (name, version, status, applied_at) "
               "VALUES ('bulk', 1, 'running', CURRENT_TIMESTAMP)")
    units = [unit("a"), unit("bulk", transactional=False), unit("b", after=["bulk"]),
             unit("c")]
    with pytest.raises(UnitBlocked, match="seedguard resolve bulk"):
        seedguard.apply(url, seeds=units, lock_mode="transaction", lock_timeout=2)
    assert sorted(pg.effects()) == ["a", "c"]


def test_server_session_killed_mid_unit_behind_pgbouncer(pg: TestDatabase,
                                                         pgbouncer_port: int) -> None:
    from seedguard import SeedFailed

    pg.create_effects_table()
    url = bouncer_url(pg, pgbouncer_port)

    def killed(session: Any) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('victim', 'half')"))
        pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        pg.execute("SELECT pg_terminate_backend(:pid)", pid=pid)  # directly on the server
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('victim', 'rest')"))

    units = [unit("before"), unit("victim", fn=killed, after=["before"])]
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(url, seeds=units, lock_mode="transaction", lock_timeout=5)
    assert info.value.unit.name == "victim"
    assert pg.effects() == ["before"] and pg.ledger() == [("before", 1)]
    result = seedguard.apply(url, seeds=[units[0], unit("victim", after=["before"])],
                             lock_mode="transaction", lock_timeout=2)
    assert [u.name for u in result.applied] == ["victim"]
    assert sorted(pg.effects()) == ["before", "victim"]
