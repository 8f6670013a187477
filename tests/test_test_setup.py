"""The test setup as a contributor without database servers meets it: one line per
unreachable server, not one skip line per test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_unreachable_servers_are_one_line_each(workers: list[str]) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SEEDGUARD_TEST_")}
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    env["SEEDGUARD_TEST_PG_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    env["SEEDGUARD_TEST_MYSQL_URL"] = "mysql+pymysql://root@127.0.0.1:1/test"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(TESTS.parent / "pyproject.toml"),
         "--rootdir", str(TESTS.parent), "-p", "no:cacheprovider", "-q", *workers,
         "test_messages.py", "-k", "reprs or dependency_left_out"],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if "SKIPPED" in line], done.stdout
    for kind in ("postgresql", "mariadb"):
        mine = [line for line in lines if line.startswith(f"{kind}: ")]
        assert len(mine) == 1, done.stdout
        assert "2 test(s) deselected" in mine[0] and "127.0.0.1:1" in mine[0]
    # The sqlite runs pass; -k's deselections and the servers' add up (pytest-xdist
    # does not total the workers' deselections in its last line).
    last = r"\b2 passed, \d+ deselected" if workers[0] == "-p" else r"\b2 passed in"
    assert re.search(last, done.stdout), done.stdout
