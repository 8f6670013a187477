"""The shipped FastAPI example (``examples/fastapi``) under uvicorn's reloader and workers,
in real processes: the lifespan runs ``await seedguard.apply_async()`` in every process,
the seed runs once.

Servers and their helpers are those of ``test_reloader`` (a process group each, on a
free loopback port, every wait capped, every group killed at the end).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _support import TestDatabase, async_url
from test_reloader import WAIT, Server, Site

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi"
UVICORN = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "{port}"]
STARTED = "Application startup complete."


class AsgiSite(Site):
    """The example app in tmp, run with the async driver of the test database."""

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(**extra)
        env["DATABASE_URL"] = async_url(self.db)
        return env

    def roles(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM role ORDER BY id")]


@pytest.fixture
def asgi_site(db: TestDatabase, tmp_path: Path) -> Iterator[AsgiSite]:
    yield from _site(db, tmp_path)


@pytest.fixture
def asgi_server_site(server_db: TestDatabase, tmp_path: Path) -> Iterator[AsgiSite]:
    yield from _site(server_db, tmp_path)


def _site(db: TestDatabase, tmp_path: Path) -> Iterator[AsgiSite]:
    folder = tmp_path / "site"
    folder.mkdir()
    for name in ("app.py", "seeds.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    site = AsgiSite(db, folder)
    try:
        yield site
    finally:
        for server in site.servers:
            server.stop()


def _restart(site: AsgiSite, server: Server, pid: int) -> dict[str, Any]:
    """Change app.py; returns the first answer from the new server process."""
    with (site.folder / "app.py").open("a") as fh:
        fh.write("\n# changed\n")
    return server.get(not_pid=pid)


def test_uvicorn_reload_seeds_once_across_restarts(asgi_site: AsgiSite) -> None:
    server = asgi_site.start([*UVICORN, "--reload"])
    first = server.get()
    assert first["roles"] == ["admin", "user"]
    again = _restart(asgi_site, server, first["pid"])
    assert again["roles"] == ["admin", "user"]
    assert server.expect(STARTED, count=2).count(STARTED) == 2, server.output
    runs = asgi_site.seed_runs()
    assert runs == [str(first["pid"])], runs
    assert asgi_site.roles() == ["admin", "user"]
    assert asgi_site.db.ledger() == [("roles", 1), ("tables", 1)]


def test_without_seedguard_uvicorn_reload_seeds_again(asgi_site: AsgiSite) -> None:
    server = asgi_site.start([*UVICORN, "--reload"], SEEDGUARD="off")
    first = server.get()
    assert first["roles"] == ["admin", "user"]
    with (asgi_site.folder / "app.py").open("a") as fh:
        fh.write("\n# changed\n")
    # The bug: the restarted process seeds again and dies on the unique name.
    output = server.expect("Application startup failed")
    assert "IntegrityError" in output
    runs = asgi_site.seed_runs()
    assert len(runs) == 2 and runs[0] != runs[1], runs


# A test-only wrapper: a route that blocks its worker's loop for a second, so that
# concurrent requests must spread over the workers.
SLOW_ROUTE = """
import os, time
from app import app

@app.get("/slow")
async def slow():
    time.sleep(1.0)
    return {"pid": os.getpid()}
"""


def test_uvicorn_workers_seed_once(asgi_server_site: AsgiSite) -> None:
    site = asgi_server_site
    (site.folder / "asgi.py").write_text(SLOW_ROUTE)
    server = site.start([*UVICORN[:3], "asgi:app", *UVICORN[4:], "--workers", "4"])
    deadline = time.monotonic() + WAIT
    while server.output.count(STARTED) < 4:
        assert server.proc.poll() is None, server.output
        assert time.monotonic() < deadline, f"workers not ready:\n{server.output}"
        time.sleep(0.1)
    workers = {int(line.rsplit("[", 1)[1].rstrip("]"))
               for line in server.output.splitlines() if "Started server process" in line}
    assert len(workers) == 4, server.output

    served: set[int] = set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        # The kernel spreads connections over the workers' shared socket
        # unevenly, more so on a loaded machine: give every worker its chance.
        for _ in range(30):
            fetch: Callable[[int], dict[str, Any]] = lambda _i: server.get("/slow")  # noqa: E731
            served |= {body["pid"] for body in pool.map(fetch, range(4))}
            if served == workers:
                break
    assert served == workers, (served, workers)  # every worker ran the lifespan and serves
    assert server.get()["roles"] == ["admin", "user"]
    runs = site.seed_runs()
    assert len(runs) == 1 and int(runs[0]) in workers, runs
    assert site.roles() == ["admin", "user"]
    assert site.db.ledger() == [("roles", 1), ("tables", 1)]
    assert "Application startup failed" not in server.output
