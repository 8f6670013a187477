"""A real FastAPI + SQLModel app (``_sqlmodel_app``, shaped like
fastapi/full-stack-fastapi-template) under ``fastapi run --workers 4``: every worker's
lifespan seeds the first superuser through the app's CRUD helpers, on the app's own engine;
the seed runs once and every worker serves.

Servers are those of ``test_reloader`` (a process group each, on a free loopback port,
every wait capped, every group killed at the end).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _sqlmodel_app import write_app
from _support import TestDatabase
from test_reloader import WAIT, Site

FASTAPI = str(Path(sys.executable).with_name("fastapi"))
STARTED = "Application startup complete."


@pytest.fixture
def site(db: TestDatabase, tmp_path: Path) -> Iterator[Site]:
    folder = tmp_path / "site"
    folder.mkdir()
    write_app(folder, "app")
    created = Site(db, folder)
    try:
        yield created
    finally:
        for server in created.servers:
            server.stop()


# The template's database by default; SQLite and MariaDB too in full runs (CI): four
# workers booting take a while on a loaded machine.
KINDS = ["postgresql", *((pytest.param("sqlite", marks=pytest.mark.slow),
                          pytest.param("mariadb", marks=pytest.mark.slow))
                         if os.environ.get("SEEDGUARD_TEST_FULL") == "1" else ())]


@pytest.mark.parametrize("db", KINDS, indirect=True)
def test_fastapi_run_with_four_workers_seeds_once(site: Site) -> None:
    server = site.start([FASTAPI, "run", "app/main.py", "--host", "127.0.0.1",
                         "--port", "{port}", "--workers", "4"])
    deadline = time.monotonic() + WAIT
    while server.output.count(STARTED) < 4:
        assert server.proc.poll() is None, server.output
        assert time.monotonic() < deadline, f"workers not ready:\n{server.output}"
        time.sleep(0.1)

    body = server.get()

    assert body["users"] == ["admin@example.com"]
    assert "Application startup failed" not in server.output
    assert len(site.seed_runs()) == 1, site.seed_runs()
    assert site.db.ledger() == [("first-superuser", 1), ("tables", 1)]


def _edit(path: Path, n: int) -> None:
    """A real edit of the app: a new route, written as an editor saves the file."""
    path.write_text(path.read_text() + (
        f"\n\n@app.get('/edit{n}')\n"
        f"def edit{n}() -> dict[str, Any]:\n"
        f"    return {{'edit': {n}, 'pid': os.getpid()}}\n"))


@pytest.mark.parametrize("db", KINDS, indirect=True)
def test_fastapi_dev_with_edits_seeds_once(site: Site) -> None:
    # `fastapi dev` runs uvicorn with its reloader: each edit of the app starts a new
    # server process whose lifespan applies again, and must find nothing to do.
    server = site.start([FASTAPI, "dev", "app/main.py", "--host", "127.0.0.1",
                         "--port", "{port}"])
    first = server.get()
    assert first["users"] == ["admin@example.com"]
    assert len(site.seed_runs()) == 1, site.seed_runs()
    pids = {first["pid"]}

    for n in (1, 2):
        _edit(site.folder / "app" / "main.py", n)
        # The new route answers only from the process that loaded the edit.
        edited = server.get(f"/edit{n}")
        assert edited["edit"] == n and edited["pid"] not in pids, (edited, server.output)
        pids.add(edited["pid"])
        assert server.get()["users"] == ["admin@example.com"]

    # Lines a process wrote before it answered may not be read yet: wait for them.
    server.expect("Reloading...", count=2)
    server.expect(STARTED, count=3)
    assert "Application startup failed" not in server.output
    assert len(site.seed_runs()) == 1, site.seed_runs()
    assert site.db.ledger() == [("first-superuser", 1), ("tables", 1)]
    with site.db.engine().connect() as conn:  # "user": quoted as each database quotes it
        users = conn.execute(sa.select(sa.func.count()).select_from(sa.table("user")))
        assert users.scalar() == 1
