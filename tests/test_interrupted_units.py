"""A non-transactional unit killed mid-way: reported, blocking, settled by `seedguard resolve`.

``transactional=False`` units are recorded "running" before their work and
"applied" after it. An applier SIGKILLed in between leaves the "running" row:
the next run refuses that unit (and what depends on it) with a message naming
it and the two commands that settle it, while independent units still run.
The operator's ``seedguard resolve NAME --retry`` / ``--applied`` (the real
CLI, in a subprocess) is the only manual step, and it is a decision, not a repair.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from _support import TestDatabase, child_env, write_module

import seedguard
from seedguard import UnitBlocked

SEEDS = '''
import os, time
import sqlalchemy as sa
import seedguard

PARK_FD = None  # set in the forked child: write a byte, then wait to be killed


def _effect(session, unit, value="x"):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, :v)"),
                    {"u": unit, "v": value})


@seedguard.seed("schema-setup")
def schema_setup(session):
    _effect(session, "schema-setup")


@seedguard.seed("bulk-import", transactional=False, after=["schema-setup"])
def bulk_import(session):
    # Work that commits in steps: it cannot sit in one transaction.
    _effect(session, "bulk-import", "part-1")
    session.commit()
    if PARK_FD is not None:
        os.write(PARK_FD, b"k")
        time.sleep(60)
    _effect(session, "bulk-import", "part-2")
    session.commit()


@seedguard.seed("reports", after=["bulk-import"])
def reports(session):
    _effect(session, "reports")


@seedguard.seed("independent")
def independent(session):
    _effect(session, "independent")
'''


def _fork_applier(url: str, module: str) -> tuple[int, int]:
    """A forked child applying ``module`` up to bulk-import; returns (pid, read end of the
    pipe it writes b"k" to in the middle of that unit). It exits 0 when done, 3 when it
    stops at an interrupted unit (UnitBlocked), 1 on any other error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            importlib.import_module(module).PARK_FD = write_fd
            seedguard.apply(url, seeds=module, target="bulk-import", lock_timeout=30)
            code = 0
        except UnitBlocked:
            code = 3
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _seeds_module(db: TestDatabase, monkeypatch: pytest.MonkeyPatch, prefix: str) -> str:
    """SEEDS as an importable module of its own, with the effects table created."""
    db.create_effects_table()
    module = f"{prefix}_{db.tmp_path.name.replace('-', '_')}"
    write_module(db.tmp_path, module, SEEDS)
    monkeypatch.syspath_prepend(str(db.tmp_path))
    importlib.import_module(module)
    return module


def _kill_mid_import(url: str, module: str) -> None:
    pid, read_fd = _fork_applier(url, module)
    try:
        assert os.read(read_fd, 1) == b"k", "the child never reached the middle of its unit"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)


def _resolve(db: TestDatabase, module: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedguard", "--url", db.url, "--seeds", module,
         "resolve", "bulk-import", *flags, "--yes"],
        cwd=db.tmp_path, env=child_env(db.tmp_path), capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def killed(db: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> tuple[TestDatabase, str]:
    module = _seeds_module(db, monkeypatch, "nontx_seeds")
    _kill_mid_import(db.url, module)
    return db, module


def _status(db: TestDatabase) -> dict[str, str]:
    return {row[0]: row[1] for row in db.execute("SELECT name, status FROM seedguard_ledger")}


def test_interrupted_unit_blocks_itself_and_dependents_only(
        killed: tuple[TestDatabase, str]) -> None:
    db, module = killed
    assert _status(db) == {"schema-setup": "applied", "bulk-import": "running"}
    assert sorted(db.effects("bulk-import")) == ["part-1"]  # half done, and recorded as such

    started = time.monotonic()
    with pytest.raises(UnitBlocked) as info:
        seedguard.apply(db.url, seeds=module, lock_timeout=2)
    assert time.monotonic() - started < 3  # no stale lock from the killed applier
    message = str(info.value)
    assert "'bulk-import'" in message
    assert "seedguard resolve bulk-import --applied" in message
    assert "seedguard resolve bulk-import --retry" in message
    assert info.value.unit.name == "bulk-import"
    # The unit that does not depend on it ran; the one that does did not.
    assert db.effects("independent") == ["x"]
    assert db.effects("reports") == []
    assert _status(db)["bulk-import"] == "running"
    # Asking again changes nothing and says the same.
    with pytest.raises(UnitBlocked, match="resolve bulk-import"):
        seedguard.apply(db.url, seeds=module, lock_timeout=2)
    assert sorted(db.effects()) == ["bulk-import", "independent", "schema-setup"]


def test_resolve_retry_runs_it_again(killed: tuple[TestDatabase, str]) -> None:
    db, module = killed
    db.execute("DELETE FROM effects WHERE unit = 'bulk-import'")  # the operator cleans up
    proc = _resolve(db, module, "--retry")
    assert proc.returncode == 0, proc.stderr + proc.stdout

    result = seedguard.apply(db.url, seeds=module, lock_timeout=2)
    assert [u.name for u in result.applied] == ["bulk-import", "reports", "independent"]
    assert sorted(db.effects("bulk-import")) == ["part-1", "part-2"]
    assert set(_status(db).values()) == {"applied"}


def test_resolve_applied_records_it_and_unblocks_dependents(
        killed: tuple[TestDatabase, str]) -> None:
    db, module = killed
    db.execute("INSERT INTO effects (unit, value) VALUES ('bulk-import', 'part-2')")  # by hand
    proc = _resolve(db, module, "--applied")
    assert proc.returncode == 0, proc.stderr + proc.stdout

    result = seedguard.apply(db.url, seeds=module, lock_timeout=2)
    assert [u.name for u in result.applied] == ["reports", "independent"]
    assert sorted(db.effects("bulk-import")) == ["part-1", "part-2"]  # not run again
    assert set(_status(db).values()) == {"applied"}


def test_resolve_refuses_a_unit_that_is_not_interrupted(db: TestDatabase,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_effects_table()
    module = f"nontx_ok_{db.tmp_path.name.replace('-', '_')}"
    write_module(db.tmp_path, module, SEEDS)
    monkeypatch.syspath_prepend(str(db.tmp_path))
    seedguard.apply(db.url, seeds=module)
    proc = _resolve(db, module, "--retry")
    assert proc.returncode == 2
    assert "not interrupted" in proc.stderr + proc.stdout
    assert _status(db)["bulk-import"] == "applied"


def test_killed_mid_unit_among_eight_appliers(db: TestDatabase,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight appliers start together; the one inside the non-transactional unit is
    SIGKILLed mid-way. Nobody runs it again or records it as applied: the seven
    others all stop at the interrupted unit, and the work stays half done, as recorded."""
    module = _seeds_module(db, monkeypatch, "nontx_eight")
    children = dict(_fork_applier(db.url, module) for _ in range(8))  # pid -> pipe it parks on
    try:
        ready, _, _ = select.select(list(children.values()), [], [], 60)
        assert ready, "no applier reached the middle of its unit"
        holder = next(pid for pid, fd in children.items() if fd == ready[0])
        assert os.read(ready[0], 1) == b"k"
        os.kill(holder, signal.SIGKILL)
        codes = {}
        deadline = time.monotonic() + 60
        for pid in children:
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
                assert time.monotonic() < deadline, "an applier never finished"
                time.sleep(0.05)
            codes[pid] = os.waitstatus_to_exitcode(done[1])
    finally:
        for pid, fd in children.items():
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)
    others = [code for pid, code in codes.items() if pid != holder]
    assert others == [3] * 7, codes  # each stopped at the interrupted unit (UnitBlocked)
    assert _status(db) == {"schema-setup": "applied", "bulk-import": "running"}
    assert sorted(db.effects("bulk-import")) == ["part-1"]
    assert db.effects("schema-setup") == ["x"]
