"""Helpers shared by the tests: the database handle, side-effect counting, real processes.

Concurrency tests use real processes released together by a barrier. Each
child is a fresh interpreter state that imports seedguard, the seeds and its
driver's dialect afresh, like a real worker: ``multiprocessing``'s
``forkserver`` start method, with only SQLAlchemy and the drivers preloaded in
the server, so that sixteen children do not each spend a second of CPU
importing them (what ``spawn`` did). Every wait is capped and every child is
reaped, even when a test fails.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from seedguard.unit import SeedUnit

EFFECTS_DDL = "CREATE TABLE effects (unit VARCHAR(255) NOT NULL, value VARCHAR(255))"


@dataclass
class TestDatabase:
    """A fresh database: ``kind`` is sqlite, postgresql or mariadb."""

    __test__ = False  # not a test class, despite the name

    kind: str
    url: str
    tmp_path: Path
    _engines: list[sa.Engine] = field(default_factory=list)

    def engine(self, **kwargs: Any) -> sa.Engine:
        engine = sa.create_engine(self.url, **kwargs)
        self._engines.append(engine)
        return engine

    def execute(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        """Run one statement in its own transaction; returns rows, if any."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def create_effects_table(self) -> None:
        """The table units write their side effects to (no unique key, so doubles show)."""
        self.execute(EFFECTS_DDL)

    def effects(self, unit: str | None = None) -> list[str]:
        """The values written to ``effects`` (by ``unit``, if given), in insertion order."""
        if unit is None:
            rows = self.execute("SELECT unit FROM effects")
        else:
            rows = self.execute("SELECT value FROM effects WHERE unit = :u", u=unit)
        return [row[0] for row in rows]

    def ledger(self) -> list[tuple[str, int]]:
        """The ledger's (name, version) pairs, sorted; empty if it does not exist."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("seedguard_ledger"):
                    return []
                rows = conn.execute(sa.text("SELECT name, version FROM seedguard_ledger"))
                return sorted((row[0], row[1]) for row in rows)
        finally:
            engine.dispose()

    def tables(self) -> set[str]:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return set(sa.inspect(conn).get_table_names())
        finally:
            engine.dispose()

    def dispose(self) -> None:
        for engine in self._engines:
            engine.dispose()
        self._engines.clear()


def effect(unit_name: str, value: str = "done") -> Callable[[Any], None]:
    """A unit body that records one side effect row."""

    def work(session: Any) -> None:
        session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, :v)"),
                        {"u": unit_name, "v": value})

    return work


def unit(name: str, *, version: int = 1, after: Sequence[str] = (), fn: Any = None,
         **options: Any) -> SeedUnit:
    """An unregistered unit whose work is one side effect row (or ``fn``)."""
    return SeedUnit(name=name, fn=fn or effect(name), version=version, after=tuple(after),
                    origin=f"tests:{name}", identity=f"tests:{name}", **options)


def registry_of(*units: SeedUnit) -> Any:
    """A ``seedguard.Registry`` holding ``units`` (not the default registry)."""
    from seedguard import Registry

    registry = Registry()
    for item in units:
        registry.add(item)
    return registry


def failing(session: Any) -> None:
    """A unit body that raises."""
    raise RuntimeError("boom")


def write_module(directory: Path, name: str, source: str) -> Path:
    """Write ``name.py`` (or a package, for dotted names) under ``directory``."""
    parts = name.split(".")
    folder = directory
    for part in parts[:-1]:
        folder = folder / part
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    path = folder / f"{parts[-1]}.py"
    path.write_text(textwrap.dedent(source))
    return path


SEEDS_TEMPLATE = '''
import time
import sqlalchemy as sa
import seedguard

{units}
'''


def seeds_source(names: Iterable[str], *, sleep: float = 0.0) -> str:
    """A seeds module declaring one side-effect unit per name, each sleeping ``sleep`` s."""
    blocks = []
    for index, name in enumerate(names):
        blocks.append(textwrap.dedent(f'''
            @seedguard.seed({name!r})
            def unit_{index}(session):
                session.execute(sa.text("INSERT INTO effects (unit, value) VALUES (:u, 'x')"),
                                {{"u": {name!r}}})
                time.sleep({sleep})
            '''))
    return SEEDS_TEMPLATE.format(units="\n".join(blocks))


# -- real processes ---------------------------------------------------------------


# Third-party modules only: seedguard and the seeds are imported by each child itself.
_PRELOAD = ["sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite",
            "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql", "psycopg",
            "pymysql"]


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _child(target: Callable[..., Any], args: tuple[Any, ...], barrier: Any, queue: Any,
           index: int, paths: list[str], environ: dict[str, str]) -> None:
    # The fork server's environment is the one it started with: give the child the
    # test's environment as it is now (as spawn did), SEEDGUARD_* settings included.
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:0] = paths
    try:
        barrier.wait(timeout=60)
        outcome = ("ok", target(*args))
    except BaseException as err:
        outcome = ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
    queue.put((index, outcome))


def run_processes(count: int, target: Callable[..., Any], *args: Any,
                  paths: Sequence[Path | str] = (), timeout: float = 120) -> list[tuple[str, Any]]:
    """Run ``target(*args)`` in ``count`` fresh processes released together by a barrier.

    Returns each child's ``("ok", return value)`` or ``("error", text)`` in
    child order. ``target`` must be importable (a module-level function).
    """
    return run_each(target, [args] * count, paths=paths, timeout=timeout)


def run_each(target: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *,
             paths: Sequence[Path | str] = (), timeout: float = 120) -> list[tuple[str, Any]]:
    """:func:`run_processes`, each child with arguments of its own (``calls[i]``)."""
    ctx = _context()
    barrier = ctx.Barrier(len(calls))
    queue = ctx.Queue()
    extra = [str(p) for p in paths]
    environ = dict(os.environ)
    procs = [ctx.Process(target=_child, args=(target, args, barrier, queue, i, extra, environ))
             for i, args in enumerate(calls)]
    for proc in procs:
        proc.start()
    outcomes: dict[int, tuple[str, Any]] = {}
    try:
        for _ in procs:
            index, outcome = queue.get(timeout=timeout)
            outcomes[index] = outcome
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    return [outcomes[i] for i in range(len(calls))]


def apply_module(url: str, seeds: str, **kwargs: Any) -> list[str]:
    """Child entry point: apply a seeds module; returns the names applied."""
    import seedguard

    result = seedguard.apply(url, seeds=seeds, **kwargs)
    return [item.name for item in result.applied]


def child_env(*paths: Path | str) -> dict[str, str]:
    """Environment for a ``subprocess`` child that must import ``paths`` first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def apply_module_own_lock(url: str, seeds: str, lock_dir: str) -> list[str]:
    """Child entry point: apply with a lock file of this process's own, as on another host
    (or after the shared lock file was deleted): only the database can serialise it."""
    import seedguard

    lock_path = os.path.join(lock_dir, f"{os.getpid()}.lock")
    result = seedguard.apply(url, seeds=seeds, lock_path=lock_path)
    return [item.name for item in result.applied]


ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                 "mariadb": "mysql+aiomysql"}


def async_url(db: TestDatabase) -> str:
    """``db``'s URL with the async driver of its kind (aiosqlite, asyncpg, aiomysql)."""
    url = sa.engine.make_url(db.url).set(drivername=ASYNC_DRIVERS[db.kind])
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def file_lock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the file lock at ``path`` while the block runs (a real holder,
    as an applier on the same host would be); it is killed and reaped afterwards."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock\n"
         "with filelock.FileLock(sys.argv[1]):\n    print('held', flush=True)\n"
         "    time.sleep(60)\n", str(path)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
