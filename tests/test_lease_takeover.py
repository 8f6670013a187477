"""A holder whose host vanishes behind a silent network cut is taken over within its lease.

The lab: two network namespaces of this test's own, joined by a veth pair in
a private range (``10.213.0.0/30``, only inside them). Private PostgreSQL 15
and MariaDB servers run in the server namespace, listening on the veth's
address and on a Unix socket in a temporary directory. The holder is a real
process in the holder namespace, connected over TCP, in the middle of a
slow unit (a long statement, or Python work with its transaction open); the
cut is ``iptables -j DROP`` in the holder's namespace, both ways: no FIN, no
RST, nothing. The waiter is this test process, outside, on the Unix socket.
After the cut the waiter must apply within lease + 15 s, the holder must fail
without recording anything, and there must be exactly one ledger row and one
side effect. Nothing outside the two namespaces is touched (loopback and the
Unix socket aside); the namespaces (with their veths and rules) and the
servers are removed in ``finally`` blocks.

Trials per database: ``SEEDGUARD_LEASE_TRIALS``; unset, the module is skipped,
so the README's test command stays short: CI's fault stage runs it on its own
with 20 (``SEEDGUARD_LEASE_TRIALS=20 scripts/test tests/test_lease_takeover.py``).
Needs root, ``ip``, ``iptables``, ``runuser``,
``/usr/lib/postgresql/15/bin`` and ``mariadbd``; without them the test skips
(fails under ``SEEDGUARD_TEST_REQUIRE_SERVERS=1``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import child_env

import seedguard
from seedguard.unit import SeedUnit

pytestmark = pytest.mark.slow

if not os.environ.get("SEEDGUARD_LEASE_TRIALS"):
    pytest.skip("the network-cut trials run on their own, as CI's lease stage does: "
                "SEEDGUARD_LEASE_TRIALS=20 scripts/test tests/test_lease_takeover.py",
                allow_module_level=True)
TRIALS = int(os.environ["SEEDGUARD_LEASE_TRIALS"])
LEASE = 5.0
BOUND = LEASE + 15  # what the issue asks: takeover within lease + 15 s
SERVER_IP, HOLDER_IP = "10.213.0.1", "10.213.0.2"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT, MARIADB_PORT = 15432, 13306
REQUIRE = os.environ.get("SEEDGUARD_TEST_REQUIRE_SERVERS") == "1"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables", "runuser", "mariadbd", "mariadb-install-db"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iptables; .ci/run installs it)"
    if not (PG_BIN / "postgres").exists():
        return f"needs PostgreSQL 15 in {PG_BIN}"
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


@dataclass
class Lab:
    """Two namespaces joined by a veth pair; the servers live in ``server``."""

    server: str
    holder: str
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: dict[str, tuple[str, str]] = field(default_factory=dict)
    """kind -> (URL template for the holder over TCP, for the waiter over the socket)."""

    def in_server(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.server, *args]

    def cut(self) -> None:
        for chain, direction in (("OUTPUT", "-d"), ("INPUT", "-s")):
            _run("ip", "netns", "exec", self.holder, "iptables", "-A", chain, direction,
                 SERVER_IP, "-j", "DROP")

    def heal(self) -> None:
        _run("ip", "netns", "exec", self.holder, "iptables", "-F", check=False)


@contextlib.contextmanager
def _namespaces() -> Iterator[Lab]:
    tag = f"{os.getpid() % 100000}"
    lab = Lab(server=f"sgls{tag}", holder=f"sglh{tag}",
              root=Path(tempfile.mkdtemp(prefix="sglease-")))
    os.chmod(lab.root, 0o755)
    try:
        _run("ip", "netns", "add", lab.server)
        _run("ip", "netns", "add", lab.holder)
        # The pair is created inside the server namespace, so the host's own
        # namespace never sees it; one end then moves to the holder's.
        _run("ip", "netns", "exec", lab.server, "ip", "link", "add", f"sgla{tag}", "type",
             "veth", "peer", "name", f"sglb{tag}")
        _run("ip", "netns", "exec", lab.server, "ip", "link", "set", f"sglb{tag}", "netns",
             lab.holder)
        for ns, dev, ip in ((lab.server, f"sgla{tag}", SERVER_IP),
                            (lab.holder, f"sglb{tag}", HOLDER_IP)):
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield lab
    finally:
        for proc in lab.procs:
            proc.terminate()
        for proc in lab.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        # Deleting a namespace deletes its veth end (and so the pair) and its rules.
        for ns in (lab.holder, lab.server):
            _run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def _wait_until(what: str, probe: object, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            if probe():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > end:
            pytest.fail(f"{what} did not come up within {timeout:g} s")
        time.sleep(0.2)


def _start_postgresql(lab: Lab) -> None:
    data = lab.root / "pg"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    _run("runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A",
         "trust", "-U", "postgres", "--no-sync")
    with (data / "pg_hba.conf").open("a") as fh:
        fh.write(f"host all all {HOLDER_IP}/32 trust\n")
    with (lab.root / "pg.log").open("wb") as log:
        lab.procs.append(subprocess.Popen(
            lab.in_server("runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D",
                          str(data), "-p", str(PG_PORT), "-k", str(data), "-c",
                          f"listen_addresses={SERVER_IP}", "-c", "fsync=off",
                          "-c", "shared_buffers=16MB", "-c", "max_connections=50"),
            stdout=log, stderr=log))
    waiter = f"postgresql+psycopg://postgres@/{{db}}?host={data}&port={PG_PORT}"
    holder = f"postgresql+psycopg://postgres@{SERVER_IP}:{PG_PORT}/{{db}}"
    lab.urls["postgresql"] = (holder, waiter)
    _wait_until("the private PostgreSQL", lambda: _ping(waiter.format(db="postgres")))


def _start_mariadb(lab: Lab) -> None:
    data = lab.root / "mariadb"
    sock = lab.root / "mariadb.sock"
    _run("mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db")
    with (lab.root / "mariadb.log").open("wb") as log:
        lab.procs.append(subprocess.Popen(
            lab.in_server("mariadbd", "--no-defaults", f"--datadir={data}",
                          f"--port={MARIADB_PORT}", f"--socket={sock}",
                          f"--bind-address={SERVER_IP}", "--user=root", "--skip-name-resolve",
                          "--skip-log-bin", "--innodb-buffer-pool-size=32M",
                          f"--pid-file={lab.root / 'mariadb.pid'}", "--max-connections=50"),
            stdout=log, stderr=log))
    root = f"mysql+pymysql://root@/mysql?unix_socket={sock}"
    _wait_until("the private MariaDB", lambda: _ping(root))
    engine = sa.create_engine(root, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for host in ("%", "localhost"):
            conn.execute(sa.text(f"CREATE USER IF NOT EXISTS 'sg'@'{host}'"))
            conn.execute(sa.text(f"GRANT ALL ON *.* TO 'sg'@'{host}'"))
    engine.dispose()
    lab.urls["mariadb"] = (f"mysql+pymysql://sg@{SERVER_IP}:{MARIADB_PORT}/{{db}}",
                           f"mysql+pymysql://sg@/{{db}}?unix_socket={sock}")


def _ping(url: str) -> bool:
    # A server still starting may drop the connection mid-handshake, and
    # pymysql then leaves its socket for the garbage collector: collect it
    # here, where its ResourceWarning is expected, not in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        finally:
            engine.dispose()
            gc.collect()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = _missing()
    if missing is not None:
        if REQUIRE:
            pytest.fail(missing)
        pytest.skip(missing)
    with _namespaces() as lab:
        yield lab


def _server(lab: Lab, kind: str) -> tuple[str, str]:
    if kind not in lab.urls:
        (_start_postgresql if kind == "postgresql" else _start_mariadb)(lab)
    return lab.urls[kind]


HOLDER = """
import logging, sys, time
import sqlalchemy as sa
import seedguard

marker, url, lease, work = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
logging.basicConfig(level=logging.WARNING, format="%(created).3f %(name)s %(message)s")

def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'holder')"))
    open(marker, "w").close()
    if work == "statement":  # the cut lands in the middle of one long statement
        sleep = "SELECT pg_sleep(120)" if session.bind.dialect.name == "postgresql" \\
            else "SELECT SLEEP(120)"
        session.execute(sa.text(sleep))
    else:  # in Python, with the unit's transaction open on the server
        time.sleep(2 * lease)

unit = seedguard.SeedUnit(name="slow", fn=slow, origin="lease:slow", identity="lease:slow")
start = time.monotonic()
try:
    seedguard.apply(url, seeds=[unit], lease=lease, lock_path=marker + ".lock")
except seedguard.SeedguardError as err:
    print(f"holder failed at {time.time():.3f}: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(1)
print("holder applied")
"""


def _waiter_unit() -> SeedUnit:
    def slow(session: sa.orm.Session) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'waiter')"))

    return SeedUnit(name="slow", fn=slow, origin="lease:slow", identity="lease:slow")


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_silent_cut_is_taken_over_within_the_lease(
        lab: Lab, kind: str, trial: int, capsys: pytest.CaptureFixture[str]) -> None:
    holder_url, waiter_url = _server(lab, kind)
    name = f"lease_{kind[:2]}_{os.getpid()}_{trial}"
    admin = waiter_url.format(db="postgres" if kind == "postgresql" else "mysql")
    engine = sa.create_engine(admin, poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    holder_url, waiter_url = holder_url.format(db=name), waiter_url.format(db=name)
    work = "statement" if trial % 2 == 0 else "python"
    run = lab.root / name
    run.mkdir()
    script = run / "holder.py"
    script.write_text(textwrap.dedent(HOLDER))
    marker = run / "started"
    db = sa.create_engine(waiter_url, poolclass=sa.pool.NullPool)
    try:
        with db.begin() as conn:
            conn.execute(sa.text(
                "CREATE TABLE effects (unit VARCHAR(255) NOT NULL, value VARCHAR(255))"))
        seedguard.apply(waiter_url, seeds=[])  # the ledger exists before the holder comes
        holder = subprocess.Popen(
            ["ip", "netns", "exec", lab.holder, sys.executable, str(script), str(marker),
             holder_url, str(LEASE), work],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_until("the holder's unit", marker.exists, timeout=60)
            time.sleep(0.5)  # into the statement (or the Python work)
            lab.cut()
            cut, cut_at = time.monotonic(), time.time()
            result = seedguard.apply(waiter_url, seeds=[_waiter_unit()], lease=LEASE,
                                     lock_timeout=LEASE + 60, lock_path=run / "waiter.lock")
            took = time.monotonic() - cut
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(timeout=LEASE + 30)
            exited = holder.returncode is not None
        finally:
            lab.heal()
            try:
                out, err = holder.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                holder.kill()
                out, err = holder.communicate(timeout=30)
        with db.connect() as conn:
            ledger = conn.execute(sa.text("SELECT name, version FROM seedguard_ledger")).all()
            effects = conn.execute(sa.text("SELECT value FROM effects")).scalars().all()
    finally:
        db.dispose()
    failed_at = re.search(r"holder failed at ([0-9.]+)", err)
    holder_error = float(failed_at.group(1)) - cut_at if failed_at else None
    with capsys.disabled():
        done = "never" if holder_error is None else f"{holder_error:.1f} s after it"
        print(f"\nlease[{kind} trial {trial} {work}]: taken over {took:.1f} s after the cut "
              f"(lease {LEASE:g} s); the holder's error came {done}", file=sys.stderr)
    assert [u.name for u in result.applied] == ["slow"]
    assert took <= BOUND, f"takeover took {took:.1f} s, more than lease + 15 s"
    assert [tuple(row) for row in ledger] == [("slow", 1)]
    assert list(effects) == ["waiter"]
    assert exited and holder.returncode == 1, out + err
    # The holder's own error arrived while the network was still cut: within
    # the lease when it was waiting on the database, right after its Python
    # work otherwise (which no database setting can interrupt).
    limit = LEASE + 5 if work == "statement" else 2 * LEASE + 5
    assert holder_error is not None and holder_error <= limit, (holder_error, err)
    # No message points at a session that is already gone.
    assert "pg_terminate_backend" not in err and "KILL" not in err, err
