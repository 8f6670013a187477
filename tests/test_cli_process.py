"""The CLI as users run it: real processes (console script, `python -m seedguard`), a
second process holding the lock (exit 4), and a real terminal (pty) for prompts and the
sign of life. Children run the *installed* seedguard with a cwd in tmp."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import TestDatabase, child_env, write_module

SLOW = '''
import os, pathlib, time
import sqlalchemy as sa
import seedguard

@seedguard.seed("slow")
def slow(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('slow', 'x')"))
    signals = pathlib.Path(os.environ["SG_SIGNALS"])
    (signals / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (signals / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
'''

QUICK = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))
'''

LONG = '''
import time
import seedguard

@seedguard.seed("big")
def big(session):
    for done in range(1, 11):
        time.sleep(0.15)
        seedguard.report_progress(done, 10)
'''

SCRIPT = Path(sys.executable).with_name("seedguard")


def run(args: list[str], cwd: Path, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env or child_env(cwd), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def work(db: TestDatabase, tmp_path: Path) -> Path:
    db.create_effects_table()
    folder = tmp_path / "work"
    folder.mkdir()
    write_module(folder, "quick_seeds", QUICK)
    write_module(folder, "slow_seeds", SLOW)
    return folder


def test_console_script_and_module_exit_codes(db: TestDatabase, work: Path) -> None:
    assert SCRIPT.exists(), f"console script not installed beside {sys.executable}"
    base = ["--url", db.url, "--seeds", "quick_seeds"]
    version = run([str(SCRIPT), "--version"], work)
    assert version.returncode == 0 and version.stdout.startswith("seedguard, version ")

    check = run([str(SCRIPT), *base, "check"], work)
    assert check.returncode == 3 and "pending: roles v1" in check.stdout
    upgrade = run([sys.executable, "-m", "seedguard", *base, "upgrade"], work)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("applying roles v1 ... done ")
    assert run([str(SCRIPT), *base, "check"], work).returncode == 0
    assert db.effects() == ["roles"]

    usage = run([str(SCRIPT), *base, "upgrade", "--bogus"], work)
    assert usage.returncode == 2
    config = run([sys.executable, "-m", "seedguard", "--seeds", "quick_seeds", "status"], work)
    assert config.returncode == 2 and config.stderr.startswith("error: no database: give --url")
    assert "Traceback" not in config.stderr


def test_lock_timeout_exits_4_and_status_names_the_holder(db: TestDatabase, work: Path) -> None:
    signals = work / "signals"
    signals.mkdir()
    env = {**child_env(work), "SG_SIGNALS": str(signals)}
    base = [sys.executable, "-m", "seedguard", "--url", db.url, "--seeds", "slow_seeds"]
    holder = subprocess.Popen([*base, "upgrade"], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (signals / "started").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never started its unit"
            time.sleep(0.02)

        started = time.monotonic()
        contender = run([*base, "--lock-timeout", "1", "upgrade", "--json"], work, env=env)
        assert contender.returncode == 4, contender.stdout + contender.stderr
        assert time.monotonic() - started < 30
        doc = json.loads(contender.stdout)
        assert doc["ok"] is False and doc["error"]["type"] == "LockTimeout"
        assert doc["error"]["exit_code"] == 4
        assert f"pid {holder.pid}" in doc["error"]["holder"]

        text = run([*base, "--lock-timeout", "0.2", "upgrade"], work, env=env)
        assert text.returncode == 4 and text.stderr.startswith("error: timed out after")
        assert "--lock-timeout" in text.stderr

        status = run([*base, "status", "--json"], work, env=env)
        assert status.returncode == 0, status.stderr
        locks = json.loads(status.stdout)["locks"]
        assert locks["file"]["holder"]["pid"] == holder.pid
        if db.kind == "postgresql":
            assert f"pid={holder.pid}" in locks["database"]["holder"]
        elif db.kind == "mariadb":
            assert locks["database"]["holder"].startswith("connection ")
        assert f"pid {holder.pid}" in run([*base, "status"], work, env=env).stdout

        (signals / "release").touch()
        _out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
    finally:
        (signals / "release").touch()
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)
    after = run([*base, "upgrade"], work, env=env)
    assert after.returncode == 0 and after.stdout.startswith("nothing to do")
    assert db.effects() == ["slow"]


# -- on a terminal -------------------------------------------------------------------------


def on_terminal(args: list[str], cwd: Path, answer: str | None = None,
                timeout: float = 60,
                replies: list[tuple[bytes, str]] | None = None) -> tuple[int, str]:
    """Run ``args`` with a pty as stdin/stdout/stderr; type ``answer`` at the first
    confirmation prompt, or each reply once its prompt text has appeared."""
    pending = list(replies or [])
    if answer is not None:
        pending.append((b"[y/N]", answer))
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, env=child_env(cwd), stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        for chunk in _read(master, deadline):
            output += chunk
            while pending and pending[0][0] in output:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    return code, output.decode(errors="replace")


def _read(fd: int, deadline: float) -> Iterator[bytes]:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        yield chunk
    raise AssertionError("the child did not finish in time")


def test_confirmation_on_a_terminal(tmp_path: Path) -> None:
    write_module(tmp_path, "terminal_seeds", "import seedguard\n\n@seedguard.seed('roles')\n"
                 "def roles(session):\n    pass\n")
    base = [sys.executable, "-m", "seedguard", "--url", f"sqlite:///{tmp_path / 't.db'}",
            "--seeds", "terminal_seeds"]
    assert run([*base, "upgrade"], tmp_path).returncode == 0

    code, output = on_terminal([*base, "forget", "roles"], tmp_path, answer="n")
    assert "Remove the ledger rows of every version of roles?" in output
    assert code == 2 and "not confirmed; nothing changed" in output
    assert run([*base, "check"], tmp_path).returncode == 0  # still applied

    code, output = on_terminal([*base, "forget", "roles"], tmp_path, answer="y")
    assert code == 0 and "forgot roles v1" in output
    assert run([*base, "check"], tmp_path).returncode == 3

    code, output = on_terminal([*base, "stamp", "roles", "--yes"], tmp_path)
    assert code == 0 and "[y/N]" not in output and "stamped roles v1" in output


def test_stamp_all_asks_on_a_terminal(tmp_path: Path) -> None:
    write_module(tmp_path, "adopt_seeds", "import seedguard\n\n@seedguard.seed('roles')\n"
                 "def roles(session):\n    pass\n")
    base = [sys.executable, "-m", "seedguard", "--url", f"sqlite:///{tmp_path / 't.db'}",
            "--seeds", "adopt_seeds"]
    sqlite3.connect(tmp_path / "t.db").close()  # a database that exists, with its data

    code, output = on_terminal([*base, "stamp", "--all"], tmp_path, answer="n")
    assert "Record every pending unit as applied without running it?" in output
    assert code == 2 and "not confirmed; nothing changed" in output
    assert run([*base, "check"], tmp_path).returncode == 3  # still pending

    code, output = on_terminal([*base, "stamp", "--all"], tmp_path, answer="y")
    assert code == 0 and "stamped roles v1" in output
    assert run([*base, "check"], tmp_path).returncode == 0


def test_long_unit_shows_a_sign_of_life_on_a_terminal(tmp_path: Path) -> None:
    write_module(tmp_path, "long_seeds", LONG)
    base = [sys.executable, "-m", "seedguard", "--url", f"sqlite:///{tmp_path / 't.db'}",
            "--seeds", "long_seeds"]
    code, output = on_terminal([*base, "upgrade"], tmp_path)
    assert code == 0, output
    assert "\r\x1b[Kapplying big v1 ... " in output  # the line is redrawn while it runs
    assert " / 10 (" in output  # with the unit's own progress
    assert "applying big v1 ... done " in output and "applied 1 unit(s)" in output

    piped = run([*base, "forget", "big"], tmp_path)  # no terminal: no prompt, no hang
    assert piped.returncode == 0
    logged = run([*base, "upgrade"], tmp_path)
    assert logged.returncode == 0 and "\r" not in logged.stdout


def test_init_asks_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'asked.db'}"
    code, output = on_terminal([sys.executable, "-m", "seedguard", "init"], tmp_path,
                               replies=[(b"Database URL", url), (b"Seeds module", "my.seeds")])
    assert code == 0, output
    text = (tmp_path / "pyproject.toml").read_text()
    assert text == f'[tool.seedguard]\nurl = "{url}"\nseeds = "my.seeds"\n'
    piped = run([sys.executable, "-m", "seedguard", "--url", url, "init"], tmp_path)
    assert piped.returncode == 2 and "already has a [tool.seedguard] section" in piped.stderr
