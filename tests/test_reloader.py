"""The bug seedguard exists for, on the real thing: the shipped example app
(``examples/flask_reloader``) under the Werkzeug reloader, ``flask run --debug`` (module
app and app factory) and gunicorn workers, in real processes.

Both of Werkzeug's reloaders run each reloader test, as users run them: ``stat``
(polls mtimes; Werkzeug's choice without ``watchdog``) and ``watchdog`` (inotify; its
choice when ``watchdog`` is installed, as Flask's docs recommend and mkdocs brings
along). The test forces one: for ``stat`` a ``watchdog`` package that fails to import
comes first on the children's path (``flask run`` has no option to choose), and a file
change is a real write, which both see.

Each server is a process group of its own on a free loopback port; every wait is capped
and every group is killed at the end. The seed unit asks ``input()``: the test answers
each prompt as it appears on the server's output, so a second prompt (the bug) would be
answered too, not hang. Children run from a tmp directory, so they import the installed
seedguard, not the checkout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _support import TestDatabase, child_env

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_reloader"
PROMPT = b"admin e-mail? "
WAIT = 60.0
# What a request sees while the reloader replaces its child: refused, reset, or cut off
# mid-response (``http.client.IncompleteRead``) when the old child exits as it answers.
NOT_ANSWERING = (urllib.error.URLError, ConnectionError, TimeoutError,
                 http.client.HTTPException)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process group whose output is read as it comes and whose prompts are answered."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], port: int,
                 answers: list[str]) -> None:
        self.port = port
        self.answers = list(answers)
        self.prompts = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._buffer += chunk
                while self.prompts < self._buffer.count(PROMPT):
                    self.prompts += 1
                    self._answer()

    def _answer(self) -> None:
        assert self.proc.stdin is not None
        try:
            if self.answers:
                self.proc.stdin.write(self.answers.pop(0).encode() + b"\n")
                self.proc.stdin.flush()
            else:
                self.proc.stdin.close()
        except (OSError, ValueError):
            pass  # the process is gone: its output says why

    @property
    def output(self) -> str:
        with self._lock:
            return self._buffer.decode(errors="replace")

    def get(self, path: str = "/", *, not_pid: int | None = None,
            timeout: float = WAIT) -> dict[str, Any]:
        """GET ``path`` once the server answers (from a process other than ``not_pid``)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                url = f"http://127.0.0.1:{self.port}{path}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body: dict[str, Any] = json.load(response)
                if not_pid is None or body.get("pid") != not_pid:
                    return body
            except (*NOT_ANSWERING, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer on port {self.port} in {timeout} s:\n"
                                     f"{self.output}")
            time.sleep(0.1)

    def status(self, path: str, timeout: float = WAIT) -> int:
        """The HTTP status of GET ``path``, once the server answers at all."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                url = f"http://127.0.0.1:{self.port}{path}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as err:
                return int(err.code)
            except NOT_ANSWERING:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer on port {self.port} in {timeout} s:\n"
                                     f"{self.output}")
            time.sleep(0.1)

    def expect(self, text: str, timeout: float = WAIT, *, count: int = 1) -> str:
        """The output once it holds ``text`` ``count`` times (it is read on another thread,
        so a line the server wrote before answering a request may not be read yet)."""
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not {count} time(s) in the output in "
                                     f"{timeout} s:\n{self.output}")
            time.sleep(0.05)
        return self.output

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Site:
    """A tmp copy of the example app, its environment and its run log."""

    def __init__(self, db: TestDatabase, folder: Path, reloader: str = "stat",
                 hidden: Path | None = None) -> None:
        self.db = db
        self.folder = folder
        self.reloader = reloader
        self.hidden = hidden
        self.run_log = folder / "seed_runs.log"
        self.servers: list[Server] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = child_env(self.folder, *([self.hidden] if self.hidden else []))
        for key in list(env):  # never inherit a reloader's or seedguard's state
            if key.startswith(("WERKZEUG_", "SEEDGUARD", "FLASK_")):
                del env[key]
        env.update(DATABASE_URL=self.db.url, SEED_RUN_LOG=str(self.run_log),
                   PYTHONUNBUFFERED="1", **extra)
        return env

    def start(self, args: list[str], *, answers: list[str] = (), **env: str) -> Server:  # type: ignore[assignment]
        port = free_port()
        server = Server([a.replace("{port}", str(port)) for a in args], self.folder,
                        self.env(PORT=str(port), **env), port, list(answers))
        self.servers.append(server)
        return server

    def seed_runs(self) -> list[str]:
        """One line (pid, e-mail) per time the seed body ran, in any process."""
        if not self.run_log.exists():
            return []
        return self.run_log.read_text().splitlines()

    def admins(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT email FROM admin ORDER BY id")]


RELOADERS = ("stat", "watchdog")
FULL = os.environ.get("SEEDGUARD_TEST_FULL") == "1"
# What Werkzeug prints as a reloader starts a child: "watchdog (inotify)" on Linux.
RESTARTING = {"stat": "Restarting with stat", "watchdog": "Restarting with watchdog"}


def watchdog_installed() -> bool:
    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def reloader(request: pytest.FixtureRequest) -> str:
    """The reloader a test's servers run: ``stat`` unless the test is parametrised with
    ``RELOADERS`` (the tests of seedguard itself; the ones showing the bug without it
    need only one)."""
    name = str(getattr(request, "param", "stat"))
    if name == "watchdog" and not watchdog_installed():
        pytest.skip("watchdog is not installed (the test extra installs it)")
    if name == "watchdog" and request.getfixturevalue("db").kind != "sqlite" and not FULL:
        # What the reloader does is the same on every database, and a watchdog
        # server takes ~45 s to start here (it watches every directory on
        # sys.path); the stat runs cover seedguard on every database.
        pytest.skip("the watchdog reloader runs on SQLite; SEEDGUARD_TEST_FULL=1 runs it on all")
    return name


def hide_watchdog(folder: Path) -> Path:
    """A folder whose ``watchdog`` package fails to import: Werkzeug then picks ``stat``."""
    package = folder / "watchdog"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        'raise ImportError("hidden by tests/test_reloader.py: run the stat reloader")\n')
    return folder


@pytest.fixture
def site(db: TestDatabase, tmp_path: Path, reloader: str) -> Iterator[Site]:
    folder = tmp_path / "site"
    folder.mkdir()
    for name in ("app.py", "factory.py"):
        shutil.copy(EXAMPLE / name, folder / name)
    hidden = hide_watchdog(tmp_path / "no-watchdog") if reloader == "stat" else None
    created = Site(db, folder, reloader, hidden)
    try:
        yield created
    finally:
        for server in created.servers:
            server.stop()


PYTHON_APP = [sys.executable, "app.py"]
FLASK_RUN = [sys.executable, "-m", "flask", "--app", "{app}", "run", "--debug",
             "--host", "127.0.0.1", "--port", "{port}"]


def flask_run(app: str) -> list[str]:
    return [arg.replace("{app}", app) for arg in FLASK_RUN]


def touch(path: Path) -> None:
    """A file change both reloaders see: a write (inotify's modify and close-write, which
    the watchdog reloader reacts to) and an mtime well past the child's start (what the
    stat reloader polls)."""
    path.write_bytes(path.read_bytes())
    later = time.time() + 2
    os.utime(path, (later, later))


def assert_seeded_once(site: Site, server: Server, email: str) -> None:
    assert server.prompts == 1, server.output
    runs = site.seed_runs()
    assert len(runs) == 1 and runs[0].endswith(f" {email}"), runs
    assert site.admins() == [email]
    assert site.db.ledger() == [("admin-user", 1), ("tables", 1)]


@pytest.mark.parametrize("reloader", RELOADERS, indirect=True)
def test_python_app_py_with_the_reloader_seeds_once(site: Site) -> None:
    server = site.start(PYTHON_APP, answers=["first@example.com"])
    body = server.get()
    assert body["admins"] == ["first@example.com"]
    # The reloader's child answered, and the parent (which printed the prompt) also
    # ran the module: two processes imported the app, the seed ran in one.
    assert body["pid"] != server.proc.pid
    assert RESTARTING[site.reloader] in server.output
    assert_seeded_once(site, server, "first@example.com")

    # A file change: the reloader starts a new child, which imports the app again.
    touch(site.folder / "app.py")
    again = server.get(not_pid=body["pid"])
    assert again["admins"] == ["first@example.com"]
    server.expect("Detected change in")
    assert_seeded_once(site, server, "first@example.com")


@pytest.mark.parametrize("reloader", RELOADERS, indirect=True)
@pytest.mark.parametrize("app", ["app", "factory"])
def test_flask_run_debug_seeds_once(site: Site, app: str) -> None:
    # apply_on_start: other flask commands load the app without seeding (or prompting).
    check = subprocess.run([sys.executable, "-m", "flask", "--app", app, "seedguard", "check"],
                           cwd=site.folder, env=site.env(), capture_output=True, text=True,
                           timeout=WAIT, stdin=subprocess.DEVNULL)
    assert check.returncode == 3, check.stdout + check.stderr
    assert "pending: admin-user v1" in check.stdout
    assert PROMPT.decode() not in check.stdout and site.seed_runs() == []

    server = site.start(flask_run(app), answers=["first@example.com"])
    body = server.get()
    assert body["admins"] == ["first@example.com"]
    assert body["pid"] != server.proc.pid  # served by the reloader's child
    assert RESTARTING[site.reloader] in server.output
    assert_seeded_once(site, server, "first@example.com")

    touch(site.folder / f"{app}.py")  # a new child loads the app again, and applies nothing
    again = server.get(not_pid=body["pid"])
    assert again["admins"] == ["first@example.com"]
    server.expect("Detected change in")
    assert_seeded_once(site, server, "first@example.com")


def test_without_seedguard_python_app_py_seeds_twice(site: Site) -> None:
    server = site.start(PYTHON_APP, answers=["first@example.com", "second@example.com"],
                        SEEDGUARD="off")
    body = server.get()
    # The bug: the reloader's parent and its child both ran the seed and asked twice;
    # two different answers make two admins.
    assert body["admins"] == ["first@example.com", "second@example.com"], server.output
    assert server.prompts == 2, server.output
    runs = site.seed_runs()
    assert [line.split()[1] for line in runs] == ["first@example.com", "second@example.com"]
    assert len({line.split()[0] for line in runs}) == 2  # in two processes


def test_without_seedguard_flask_run_fails_on_the_unique_key(site: Site) -> None:
    server = site.start(flask_run("app"), answers=["same@example.com", "same@example.com"],
                        SEEDGUARD="off")
    # The bug as reported: `flask run --debug` loads the app in the reloader's parent
    # and again in its child; the child's second insert of the same e-mail fails, and
    # (Flask keeps a reloader child up to wait for a fix) every request is an error.
    assert server.status("/") == 500, server.output
    output = server.expect("IntegrityError")
    assert server.prompts == 2, output
    assert len({line.split()[0] for line in site.seed_runs()}) == 2
    assert site.admins() == ["same@example.com"]


@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload"])
def test_gunicorn_workers_seed_once(pg: TestDatabase, tmp_path: Path, preload: bool) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(EXAMPLE / "app.py", folder / "app.py")
    ready = folder / "ready"
    ready.mkdir()
    # A test-only wrapper: a slow route (so concurrent requests must spread over the
    # workers) that reports the PostgreSQL backend serving this worker, and a file per
    # worker written once it has loaded the app (after apply_on_start, in the worker or,
    # with --preload, in the master before the fork, like uWSGI without lazy-apps).
    (folder / "wsgi.py").write_text(
        "import os\n"
        "import sqlalchemy as sa\n"
        "from app import app, db\n\n"
        "@app.get('/slow')\n"
        "def slow():\n"
        "    backend = db.session.scalar(sa.text('SELECT pg_backend_pid() FROM pg_sleep(1.0)'))\n"
        "    return {'pid': os.getpid(), 'backend': backend}\n"
    )
    (folder / "gunicorn.conf.py").write_text(
        "import os, pathlib\n\n"
        "def post_worker_init(worker):\n"
        "    pathlib.Path(os.environ['READY_DIR'], str(os.getpid())).touch()\n"
    )
    site = Site(pg, folder)
    server = site.start([sys.executable, "-m", "gunicorn", "--workers", "4", "--bind",
                         "127.0.0.1:{port}", "--timeout", "60",
                         *(["--preload"] if preload else []), "wsgi:app"],
                        ADMIN_EMAIL="gunicorn@example.com", READY_DIR=str(ready))
    try:
        deadline = time.monotonic() + WAIT
        while len(list(ready.iterdir())) < 4:
            assert server.proc.poll() is None, server.output
            assert time.monotonic() < deadline, f"workers not ready:\n{server.output}"
            time.sleep(0.1)
        workers = {int(p.name) for p in ready.iterdir()}
        assert len(workers) == 4

        backends: dict[int, set[int]] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(5):
                fetch: Callable[[int], dict[str, Any]] = lambda _i: server.get("/slow")  # noqa: E731
                for body in pool.map(fetch, range(4)):
                    backends.setdefault(body["pid"], set()).add(body["backend"])
                if set(backends) == workers:
                    break
        assert set(backends) == workers, (backends, workers)  # every worker serves
        # No two workers on one server connection: a connection the start-up apply left
        # in the pool before a fork would be shared by every worker.
        all_backends = [b for seen in backends.values() for b in seen]
        assert len(all_backends) == len(set(all_backends)), backends
        assert server.get()["admins"] == ["gunicorn@example.com"]
        runs = site.seed_runs()
        applier = {server.proc.pid} if preload else workers
        assert len(runs) == 1 and int(runs[0].split()[0]) in applier, runs
        assert site.admins() == ["gunicorn@example.com"]
        assert pg.ledger() == [("admin-user", 1), ("tables", 1)]
        assert "Worker failed to boot" not in server.output
    finally:
        server.stop()
