"""The same seeds applied to many targets: tenants' schemas, many databases, many runners.

:func:`apply_each` applies to each target independently, as ``apply()``
would (its own ledger, its own locks, its own failure), on ``workers``
threads:

1. *One look per target, no lock.* Each worker keeps one connection per
   server and reads each target's ledger by its qualified name in one
   statement (no schema is entered for it); every target found up to date is
   done. An up-to-date fleet costs one round trip per target.
2. *Try each remaining target's locks without waiting.* A target whose lock
   another runner holds (another pod, CI job or process of this fleet) is
   left for later: that runner is most likely applying it right now.
3. *A final pass over the targets left*, waiting up to ``lock_timeout`` for
   each; under the locks each is re-read, so what the other runner applied
   is skipped, and every unit runs exactly once per target.

One engine per server URL serves all of its schemas (a :class:`Schema`
borrows its pool); an engine given by the caller is used as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union

from seedguard.errors import ConfigError, LockTimeout
from seedguard.result import ApplyResult
from seedguard.schema import Schema, target_label

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from seedguard.reports import StatusResult

log = logging.getLogger(__name__)

T = TypeVar("T")

Target = Union[str, "Engine", Schema]
"""What a fleet is made of: a URL, an ``Engine``, or a :class:`Schema`."""

TargetCallback = Callable[[str, "ApplyResult | StatusResult | BaseException"], None]
"""Called once per target as it finishes: its label and its result or error."""


@dataclass
class FleetResult:
    """What :func:`apply_each` did to each target, by label (a schema's name, else the
    URL with its password hidden)."""

    results: dict[str, ApplyResult] = field(default_factory=dict)
    """Each target that succeeded: its :class:`~seedguard.ApplyResult`."""
    failed: dict[str, BaseException] = field(default_factory=dict)
    """Each target that failed: the exception ``apply()`` would have raised."""

    @property
    def ok(self) -> bool:
        """True when no target failed."""
        return not self.failed

    def record(self, label: str, outcome: ApplyResult | BaseException) -> None:
        """File ``outcome`` under ``label``: an exception in ``failed``, else in ``results``."""
        if isinstance(outcome, BaseException):
            self.failed[label] = outcome
        else:
            self.results[label] = outcome

    def in_order(self, labels: Sequence[str]) -> None:
        """Order ``results`` and ``failed`` as ``labels`` (the targets as given)."""
        order = {label: index for index, label in enumerate(labels)}
        self.results = dict(sorted(self.results.items(), key=lambda item: order[item[0]]))
        self.failed = dict(sorted(self.failed.items(), key=lambda item: order[item[0]]))


def apply_each(
    targets: Iterable[Target],
    *,
    workers: int = 4,
    on_target: TargetCallback | None = None,
    **options: Any,
) -> FleetResult:
    """Apply the same seeds to every target, each independently, on ``workers`` threads.

    A failing target never stops or rolls back another: its error is in
    ``result.failed`` and the others run on. Many runners may work on one
    fleet at once (CI matrix jobs, a Kubernetes indexed Job, pods): each
    target's own database lock decides who applies it, and a runner that
    finds a target locked moves on and comes back to it at the end.

    :param targets: URLs, ``Engine`` objects and :class:`Schema` objects;
        their labels must be distinct.
    :param workers: how many targets are worked on at once (threads); each
        holds at most a couple of connections per server.
    :param on_target: called as each target finishes with its label and its
        ``ApplyResult`` or exception (from the worker's thread), e.g. for a
        progress bar.
    :param options: ``apply()``'s keywords (``seeds``, ``contexts``,
        ``target``, ``dry_run``, ``lock_timeout``, ``strict``, ``on_event``,
        ``lock_mode``, ``schema``, ``alembic_config``), applied to every target.
        ``lock_timeout`` bounds each target's final wait.
    :returns: a :class:`FleetResult`.
    :raises ConfigError: a bad option, duplicate labels, or seeds that cannot
        be loaded; nothing was applied then. Errors of a single target go to
        ``FleetResult.failed`` instead.
    """
    check_workers(workers)
    if options.get("lock_path") is not None:
        raise ConfigError(
            "apply_each() gives every target a file lock of its own; lock_path would make "
            "all of them one: leave it unset"
        )
    known = _apply_options()
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"apply_each() got unknown option(s) {sorted(unknown)}; it takes "
                          f"apply()'s keywords but plan: {sorted(known)}")
    labelled = labelled_targets(targets)
    result = FleetResult()
    guard = threading.Lock()

    def finish(label: str, outcome: ApplyResult | BaseException) -> None:
        with guard:
            result.record(label, outcome)
        if on_target is not None:
            on_target(label, outcome)

    with _SharedEngines(workers) as engines:
        shared = [(label, engines.share(target)) for label, target in labelled]
        looked: set[str] = set()
        remaining = _up_to_date(shared, workers, options, finish, looked=looked)
        later = _attempt(remaining, workers, {**options, "lock_timeout": 0}, finish,
                         defer_locked=True, looked=looked)
        if later:
            log.info("%d target(s) were locked by another runner; waiting for them now",
                     len(later))
        _attempt(later, workers, options, finish, defer_locked=False, looked=looked)
    # Back in the caller's order, not the order the workers finished in.
    result.in_order([label for label, _ in labelled])
    return result


@dataclass
class FleetCheck:
    """What :func:`check_each` (and :func:`status_each`) found, by target label."""

    up_to_date: list[str] = field(default_factory=list)
    """Targets whose ledger holds every selected unit, unchanged (one look each)."""
    results: dict[str, StatusResult] = field(default_factory=dict)
    """Targets read in full: :func:`status_each` reads every target so, :func:`check_each`
    only those the first look did not find up to date."""
    failed: dict[str, BaseException] = field(default_factory=dict)
    """Targets that could not be read: the exception ``status()`` would have raised."""

    @property
    def pending(self) -> list[str]:
        """Targets with a unit pending, waiting, drifted or blocked."""
        return [label for label, status in self.results.items() if not status.ok]

    @property
    def ok(self) -> bool:
        """True when every target is up to date and none failed."""
        return not self.failed and not self.pending


def check_each(targets: Iterable[Target], *, workers: int = 4, seeds: Any = None,
               contexts: Iterable[str] | None = None,
               on_target: TargetCallback | None = None) -> FleetCheck:
    """Whether every target is up to date, reading only: one statement per up-to-date target.

    A target the first look does not find up to date is read in full, as
    ``seedguard.api.check()`` would (its ``StatusResult`` says what is
    pending or drifted).

    :param targets: URLs, ``Engine`` objects and :class:`Schema` objects.
    :param workers: how many targets are read at once (threads, one
        connection per server each for the first look).
    :param seeds: which units, as ``apply()`` takes them.
    :param contexts: the active contexts, as ``apply()`` takes them.
    :param on_target: called as each target is answered, with its label and
        an ``ApplyResult`` (up to date at the first look; its ``skipped`` are the
        units) or a ``StatusResult`` or the exception.
    """
    return _read_each(targets, workers=workers, seeds=seeds, contexts=contexts,
                      on_target=on_target, full=False)


def status_each(targets: Iterable[Target], *, workers: int = 4, seeds: Any = None,
                contexts: Iterable[str] | None = None,
                on_target: TargetCallback | None = None) -> FleetCheck:
    """Every target's ``StatusResult`` (:func:`check_each`'s parameters), reading only."""
    return _read_each(targets, workers=workers, seeds=seeds, contexts=contexts,
                      on_target=on_target, full=True)


def _read_each(targets: Iterable[Target], *, workers: int, seeds: Any,
               contexts: Iterable[str] | None, on_target: TargetCallback | None,
               full: bool) -> FleetCheck:
    check_workers(workers)
    labelled = labelled_targets(targets)
    found = FleetCheck()
    guard = threading.Lock()
    options: dict[str, Any] = {"seeds": seeds, "contexts": contexts}

    def finish(label: str, outcome: Any) -> None:
        with guard:
            if isinstance(outcome, BaseException):
                found.failed[label] = outcome
            elif isinstance(outcome, ApplyResult):
                found.up_to_date.append(label)
            else:
                found.results[label] = outcome
        if on_target is not None:
            on_target(label, outcome)

    given = dict(labelled)

    def read(item: Labelled, connections: _Connections) -> None:
        label, target = item
        if isinstance(given[label], str):
            # By its URL: status opens a SQLite file read-only, and never creates it.
            target = given[label]
        try:
            outcome: Any = _status(target, options)
        except Exception as err:
            outcome = err
        finish(label, outcome)

    with _SharedEngines(workers) as engines:
        shared = [(label, engines.share(target)) for label, target in labelled]
        rest = shared if full else _up_to_date(shared, workers, options, finish)
        _in_workers(rest, workers, read)
    order = {label: index for index, (label, _) in enumerate(labelled)}
    found.up_to_date.sort(key=order.__getitem__)
    found.results = dict(sorted(found.results.items(), key=lambda item: order[item[0]]))
    found.failed = dict(sorted(found.failed.items(), key=lambda item: order[item[0]]))
    return found


def _status(target: Target, options: dict[str, Any]) -> StatusResult:
    from seedguard import api
    from seedguard import config as _config
    from seedguard.schema import scoped

    if isinstance(target, Schema):
        assert not isinstance(target.bind, str)  # shared by _SharedEngines.share
        settings = _config.resolve(scoped(target.bind, target.name), seeds=options["seeds"],
                                   contexts=options["contexts"], ledger_schema=target.name)
        return api.status(settings)
    return api.status(target, seeds=options["seeds"], contexts=options["contexts"])


def check_workers(workers: int) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, not {workers!r}")


def _apply_options() -> frozenset[str]:
    """apply()'s keywords, read from its signature so a keyword added there works here too;
    less ``plan``: a reviewed plan pins one database's ledger, not a fleet's."""
    import inspect

    from seedguard.api import apply

    return frozenset(name for name, parameter in inspect.signature(apply).parameters.items()
                     if parameter.kind is parameter.KEYWORD_ONLY) - {"plan"}


def labelled_targets(targets: Iterable[Target]) -> list[tuple[str, Target]]:
    """``(label, target)`` for each target, refusing two with one label."""
    labelled: list[tuple[str, Target]] = []
    seen: set[str] = set()
    for target in targets:
        label = target_label(target)
        if label in seen:
            raise ConfigError(
                f"two targets are both labelled {label!r}; each target of a fleet must be "
                "named once (a schema by its name, anything else by its URL)"
            )
        seen.add(label)
        labelled.append((label, target))
    return labelled


def shard(labels: Sequence[str], index: int, count: int) -> list[str]:
    """The labels shard ``index`` of ``count`` takes: a stable split by a hash of each label.

    Every runner computes the same split from the same list, whatever its
    order; ``index`` counts from 0, as Kubernetes' ``JOB_COMPLETION_INDEX``.

    :param labels: the fleet's target labels.
    :param index: this runner's shard, 0 to ``count - 1``.
    :param count: how many shards there are.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(
            f"shard {index}/{count}: expected I/N with 0 <= I < N (I counts from 0, as "
            "Kubernetes' JOB_COMPLETION_INDEX does; in a 1-based CI matrix pass I-1)"
        )
    # A cryptographic hash, not crc32: CRC is linear, so names that differ in
    # their last character (tenant_0, tenant_1, ...) can all share one low bit.
    return [label for label in labels
            if int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")
            % count == index]


# -- the passes ------------------------------------------------------------------

Labelled = tuple[str, Target]
Finish = Callable[[str, ApplyResult | BaseException], None]


def _up_to_date(targets: Sequence[Labelled], workers: int, options: dict[str, Any],
                finish: Finish, *, looked: set[str] | None = None) -> list[Labelled]:
    """Finish every target whose ledger holds every selected unit; return the others.

    Only reads, without locks, on one connection per server and worker: the
    schemas of one server in batches of :data:`LOOK_BATCH`, one statement
    each (:func:`_look_batch`), every other target in one statement of its
    own. Anything unusual (no ledger, a behind or newer one, an unreachable
    server) is left to ``apply()``, which reports it. ``looked`` receives the
    label of each target returned whose ledger was read (work to do, or no
    ledger yet): ``apply()`` need not look at it again before its locks.
    """
    if looked is None:
        looked = set()
    if options.get("schema") or not targets:
        return list(targets)  # the user's alembic upgrade runs under the locks
    from seedguard import config as _config
    from seedguard.api import select
    from seedguard.planning import expected

    settings = _config.resolve(seeds=options.get("seeds"), contexts=options.get("contexts"))
    bind_key = options.get("bind_key")
    units = [unit for unit in select(settings, target=options.get("target"))
             if unit.bind == bind_key]
    rows = expected(units).rows
    if not rows:
        return list(targets)
    from seedguard.connect import sqlite_file
    from seedguard.ledger import Ledger

    dry_run = bool(options.get("dry_run"))
    left: list[Labelled] = []
    guard = threading.Lock()

    def look(item: Labelled, connections: _Connections) -> None:
        label, target = item
        engine, schema = _where(target, settings.ledger_schema)
        path = sqlite_file(engine.url)
        if path is not None and not os.path.isfile(path):
            # Connecting would create the file: apply() creates it, status reports it.
            with guard:
                left.append(item)
            return
        ledger = Ledger.named(settings.ledger_table, schema)
        read = True
        try:
            conn = connections.get(engine)
            compared = ledger.read_against(conn, rows)
        except Exception as err:  # left to apply(), which reports it in its own words
            log.debug("look at %s failed (%s); applying it instead", label, type(err).__name__)
            connections.drop(engine)
            compared, read = None, False
        if compared is not None and compared.all_applied:
            finish(label, ApplyResult(skipped=list(units), dry_run=dry_run))
        else:
            with guard:
                left.append(item)
                if read:
                    looked.add(label)

    def look_batch(batch: list[Labelled], connections: _Connections) -> None:
        engine, _ = _where(batch[0][1], None)
        try:
            found = _look_batch(connections.get(engine), batch, settings.ledger_table,
                                rows)
        except Exception as err:
            # One schema without a ledger (new, being created) fails the whole
            # statement: each is looked at alone, as the others are.
            log.debug("batched look failed (%s); one look per schema instead",
                      type(err).__name__)
            connections.drop(engine)
            for item in batch:
                look(item, connections)
            return
        for item in batch:
            if found.get(item[0]):
                finish(item[0], ApplyResult(skipped=list(units), dry_run=dry_run))
            else:
                with guard:
                    left.append(item)
                    looked.add(item[0])

    batches, single = _batches(targets)
    _in_workers([*batches, *([item] for item in single)], workers,
                lambda batch, connections: look_batch(batch, connections) if len(batch) > 1
                else look(batch[0], connections))
    order = {label: index for index, (label, _) in enumerate(targets)}
    return sorted(left, key=lambda item: order[item[0]])


LOOK_BATCH = 200
"""Schemas read by one statement of the first look. A ``UNION ALL`` of 400
selects parses and plans in a few milliseconds on PostgreSQL; a statement per
1,000 schemas is no faster, and PostgreSQL's parser recurses once per branch
(``max_stack_depth``)."""


def _batches(targets: Sequence[Labelled]) -> tuple[list[list[Labelled]], list[Labelled]]:
    """The :class:`Schema` targets of each server engine in batches; the other targets."""
    by_engine: dict[int, list[Labelled]] = {}
    single: list[Labelled] = []
    for item in targets:
        target = item[1]
        if isinstance(target, Schema) and not isinstance(target.bind, str):
            by_engine.setdefault(id(target.bind), []).append(item)
        else:
            single.append(item)
    batches: list[list[Labelled]] = []
    for items in by_engine.values():
        batches.extend(items[start:start + LOOK_BATCH]
                       for start in range(0, len(items), LOOK_BATCH))
    return batches, single


def _look_batch(conn: Connection, batch: Sequence[Labelled], table: str,
                expected: Sequence[tuple[str, int, str]]) -> dict[str, bool]:
    """For each schema of ``batch`` (one server's), whether its ledger holds every unit of
    ``expected`` applied and unchanged, at this seedguard's ledger revision: one statement.

    Each schema's ledger rows and its version table's row, tagged with the
    schema's place in the batch, read by qualified names (no schema is
    entered). The answer is :meth:`seedguard.ledger.Ledger.read_against`'s
    "all applied"; anything else (a behind or newer ledger) is ``False``, for
    ``apply()`` to look at and report.
    """
    from seedguard.ledger import HEAD_REVISION

    preparer = conn.dialect.identifier_preparer
    ledger, version = preparer.quote(table), preparer.quote(table + "_version")
    parts = []
    for index, (_, target) in enumerate(batch):
        assert isinstance(target, Schema)
        schema = preparer.quote_schema(target.name)
        # The ledger first: its typed columns give the NULLs of the version
        # row their types (PostgreSQL resolves a UNION's types left to right).
        parts.append(f"SELECT {index}, name, version, checksum, status FROM {schema}.{ledger}")
        parts.append(f"SELECT {index}, version_num, NULL, NULL, NULL FROM {schema}.{version}")
    result = conn.exec_driver_sql(" UNION ALL ".join(parts))
    fetched: Sequence[tuple[Any, ...]] = result.cursor.fetchall()
    result.close()
    rows: list[set[tuple[Any, ...]]] = [set() for _ in batch]
    revisions: list[list[Any]] = [[] for _ in batch]
    for index, name, unit_version, checksum, status in fetched:
        if status is None:
            revisions[index].append(name)
        else:
            rows[index].add((name, unit_version, checksum, status))
    applied = {(name, unit_version, checksum, "applied")
               for name, unit_version, checksum in expected}
    return {label: revisions[index] == [HEAD_REVISION] and applied <= rows[index]
            for index, (label, _) in enumerate(batch)}


def _attempt(targets: Sequence[Labelled], workers: int, options: dict[str, Any],
             finish: Finish, *, defer_locked: bool,
             looked: Collection[str] = ()) -> list[Labelled]:
    """``apply()`` each target; with ``defer_locked`` a lock timeout leaves it for later.

    A target in ``looked`` was found with work to do by the first pass:
    ``apply()`` goes straight to its locks (:func:`seedguard.startup.looked_already`).
    """
    # What the units need, imported here, before the workers start, not by
    # the first worker to find work: while one thread is importing
    # sqlalchemy.orm, its inspection hooks are already registered, and Core
    # in another thread (a pool's ping compiling select(1)) reaches them and
    # fails on the half-initialised module ("partially initialized module
    # 'sqlalchemy.orm.exc' has no attribute 'UnmappedClassError'").
    import sqlalchemy.orm  # noqa: F401

    from seedguard.api import apply
    from seedguard.startup import looked_already

    deferred: list[Labelled] = []
    guard = threading.Lock()

    def attempt(item: Labelled, connections: _Connections) -> None:
        label, target = item
        try:
            with looked_already() if label in looked else contextlib.nullcontext():
                outcome: ApplyResult | BaseException = apply(target, **options)
        except LockTimeout as err:
            if defer_locked:
                with guard:
                    deferred.append(item)
                return
            outcome = err
        except Exception as err:
            outcome = err
        finish(label, outcome)

    _in_workers(targets, workers, attempt)
    return deferred


# -- workers and shared engines -----------------------------------------------------


class _Connections:
    """One worker's connections, one per server engine, closed when the worker ends."""

    def __init__(self) -> None:
        self._open: dict[int, Connection] = {}

    def get(self, engine: Engine) -> Connection:
        conn = self._open.get(id(engine))
        if conn is None:
            from seedguard.connect import connection_errors

            with connection_errors(engine):
                conn = engine.connect()
            self._open[id(engine)] = conn
        return conn

    def drop(self, engine: Engine) -> None:
        conn = self._open.pop(id(engine), None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for conn in self._open.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._open.clear()


def _in_workers(items: Sequence[T], workers: int,
                work: Callable[[T, _Connections], None]) -> None:
    """Run ``work`` on every item on up to ``workers`` threads; return when all are done.

    ``work`` must not raise (each pass turns errors into outcomes); if it
    does anyway, the error is raised here once every thread has stopped.
    """
    if not items:
        return
    pending = iter(items)
    take = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        connections = _Connections()
        try:
            while not stop.is_set():
                with take:
                    item = next(pending, None)
                if item is None:
                    return
                work(item, connections)
        except BaseException as err:  # re-raised in the caller's thread below
            stop.set()
            errors.append(err)
        finally:
            connections.close()

    count = min(workers, len(items))
    if count == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker, name=f"seedguard-fleet-{n}", daemon=True)
                   for n in range(count)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            # Ctrl-C: let the workers finish the target each is on, start no more.
            stop.set()
            raise
    if errors:
        raise errors[0]


def _where(target: Target, ledger_schema: str | None) -> tuple[Engine, str | None]:
    """The engine a target's ledger is read through, and the schema it lives in."""
    if isinstance(target, Schema):
        assert not isinstance(target.bind, str)  # shared by _SharedEngines.share
        return target.bind, target.name
    assert not isinstance(target, str)
    return target, ledger_schema


QUERY_CACHE = 100
"""The compiled-statement cache of an engine the fleet makes (SQLAlchemy's default
is 500). The ledger's statements name each schema, so each schema's compile anew
and are never asked for again; a cache of 500 (which holds up to 750) filled
with them held about 40 MB by a few hundred schemas. The statements every
target shares (the locks', the canary's, unqualified units') stay in a small one."""


class _SharedEngines:
    """One engine per URL for the whole run, disposed of at its end."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._engines: dict[str, Engine] = {}
        self._pools: set[int] = set()
        self._held = contextlib.ExitStack()

    def __enter__(self) -> _SharedEngines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._held.close()
        for engine in self._engines.values():
            engine.dispose()

    def share(self, target: Target) -> Target:
        if isinstance(target, str):
            return self._engine(target)
        if isinstance(target, Schema):
            engine = self._engine(target.bind) if isinstance(target.bind, str) else target.bind
            self._prepare(engine)
            return Schema(engine, target.name)
        return target

    def _prepare(self, engine: Engine) -> None:
        """Install what the workers' runs would add to a pool they share, before they
        start: SQLAlchemy's listener lists must not change while other threads use them."""
        if id(engine.pool) in self._pools:
            return
        from seedguard.guard import guarding_pool
        from seedguard.locks.lease import shared_heartbeats
        from seedguard.schema import restore_on_checkin

        self._pools.add(id(engine.pool))
        restore_on_checkin(engine)
        self._held.enter_context(guarding_pool(engine.pool))
        # One schema's lock after another: each lock's heartbeat reuses the
        # connection of the one before instead of opening its own.
        self._held.enter_context(shared_heartbeats(engine, at_once=self._workers))

    def _engine(self, url: str) -> Engine:
        engine = self._engines.get(url)
        if engine is None:
            from seedguard.connect import create

            # Each worker holds up to two connections to a server at once
            # (its look, and a run's lock session beside its work); a pool
            # smaller than that would make the workers wait for each other.
            engine = create(url, pool_size=max(5, 2 * self._workers),
                            query_cache_size=QUERY_CACHE)
            self._engines[url] = engine
        return engine

