"""asyncio: ``await apply_async()`` for FastAPI, Starlette, Quart and async SQLAlchemy.

There is one apply path, not two. :func:`apply_async` runs the synchronous
:func:`seedguard.apply` inside SQLAlchemy's ``greenlet_spawn`` on the
``AsyncEngine``'s ``sync_engine``: each database call the runner makes is
handed to the event loop by the async driver's ``await_only`` and awaited
there, database-lock waits (``pg_advisory_lock``, ``GET_LOCK``) included. Two
waits are not database calls, and they ask this module how to wait:

* the file lock (:meth:`seedguard.locks.file.FileLock.acquire`) polls without
  blocking and sleeps between polls with ``await_only(asyncio.sleep())``
  (:func:`loop_sleep`), so other tasks keep running while an applier waits;
* the unit (:func:`call_unit`): an ``async def`` unit gets an ``AsyncSession``
  on the unit's own connection and transaction, and is awaited on the loop; a
  plain ``def`` unit runs as in :func:`seedguard.apply`.

Nothing here imports SQLAlchemy's asyncio extension, greenlet or a driver
until an async call needs it: ``import seedguard`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from seedguard.errors import ConfigError
from seedguard.eventloop import INSTALL_ASYNC, is_async_engine, run_in_greenlet

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from seedguard.events import Listener
    from seedguard.fleet import FleetResult
    from seedguard.registry import SeedsSpec
    from seedguard.result import ApplyResult

T = TypeVar("T")



async def apply_async(
    bind: AsyncEngine | Engine | str | None = None,
    *,
    seeds: SeedsSpec = None,
    contexts: Iterable[str] | None = None,
    target: str | None = None,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    lock_path: str | os.PathLike[str] | None = None,
    strict: bool = False,
    on_event: Listener | None = None,
    lock_mode: str | None = None,
    schema: bool = False,
    alembic_config: str | os.PathLike[str] | None = None,
    scoped_sessions: Iterable[Any] = (),
    session_class: type[Any] | None = None,
    lease: float | None = None,
    bind_key: str | None = None,
) -> ApplyResult:
    """Apply every pending selected unit, exactly once across processes and hosts, from async code.

    The same run as :func:`seedguard.apply` (the same ledger, the same two
    locks, the same result), awaited on the running event loop: other tasks
    keep running while this call waits for a lock or for the database. Call it
    from a FastAPI/Starlette lifespan or a Quart ``before_serving`` hook.
    ``async def`` units receive an ``AsyncSession`` bound to the unit's
    transaction (``await session.commit()`` ends only a SAVEPOINT); plain
    ``def`` units receive a ``Session`` on the same connection.

    :param bind: an ``AsyncEngine``, a URL with an async driver
        (``postgresql+asyncpg://``, ``postgresql+psycopg://``,
        ``sqlite+aiosqlite://``, ``mysql+aiomysql://``, ``mysql+asyncmy://``), or
        None (``SEEDGUARD_URL``, ``[tool.seedguard]``, a Flask app context's
        engine). A sync ``Engine`` or a sync driver's URL also works: the run
        then happens in a worker thread, and ``async def`` units are refused
        (they need an async driver).
    :param seeds: selects units (dotted module path, module, Registry,
        iterable of units; None: the configured seeds, else every unit
        declared so far).
    :param contexts: the active contexts (units with contexts run only when
        one of theirs is active).
    :param target: limits the run to one unit and its dependencies.
    :param dry_run: report ``pending`` and write nothing.
    :param lock_timeout: seconds; bounds every wait for a lock.
    :param lock_path: the file lock's path (default: derived from the URL).
    :param strict: any drift fails the run (:class:`seedguard.DriftError`).
    :param on_event: receives progress events (see :mod:`seedguard.events`).
    :param lock_mode: ``"session"`` (default: one database lock held for the
        whole run) or ``"transaction"`` (PostgreSQL behind PgBouncer in
        transaction pooling: a transaction-level lock per unit).
    :param schema: run your ``alembic upgrade head`` first, under the same locks.
    :param alembic_config: your ``alembic.ini`` (or its folder), for ``schema``
        and for units with ``requires_revision``.
    :param scoped_sessions: your ``scoped_session`` objects; while a unit runs
        each returns the unit's (sync) session, as in :func:`seedguard.apply`.
    :param session_class: the class of every unit's session:
        ``sqlmodel.ext.asyncio.session.AsyncSession`` gives ``async def`` units
        SQLModel's AsyncSession (``await session.exec(...)``) and plain units a
        ``sqlmodel.Session``; ``sqlmodel.Session`` gives plain units that class.
        A unit whose session parameter is annotated with a Session class gets
        that class without it.
    :param lease: seconds (default 30): how long a holder whose host vanished
        keeps other appliers waiting, as in :func:`seedguard.apply`. With an
        async driver the keepalives bound it on PostgreSQL; there is no
        heartbeat thread (the connection belongs to the event loop).
    :param bind_key: one Flask-SQLAlchemy bind's units, as in :func:`seedguard.apply`.
    """
    import asyncio

    from seedguard import api
    from seedguard import config as _config

    options: dict[str, Any] = {
        "seeds": seeds, "contexts": contexts, "target": target, "dry_run": dry_run,
        "lock_timeout": lock_timeout, "lock_path": lock_path, "strict": strict,
        "on_event": on_event, "lock_mode": lock_mode, "schema": schema,
        "alembic_config": alembic_config, "scoped_sessions": tuple(scoped_sessions),
        "session_class": session_class,
        "lease": lease, "bind_key": bind_key,
    }
    if is_async_engine(bind):
        return await run_in_greenlet(api.apply, bind.sync_engine, **options)  # type: ignore[union-attr]
    if bind is not None and not isinstance(bind, str):
        assert not is_async_engine(bind)
        bind = cast("Engine", bind)
        if bind.dialect.is_async:  # an AsyncEngine's sync_engine, passed as it is
            return await run_in_greenlet(api.apply, bind, **options)
        # A sync driver blocks: keep it off the event loop.
        return await asyncio.to_thread(api.apply, bind, **options)
    settings = _config.resolve(bind)  # only to find the URL: apply() resolves the rest
    if settings.engine is not None and settings.engine.dialect.is_async:
        # SEEDGUARD_ENGINE / [tool.seedguard] engine naming the app's AsyncEngine.
        return await run_in_greenlet(api.apply, settings.engine, **options)
    if settings.engine is not None or not settings.url:
        # The Flask-SQLAlchemy engine (sync), or no database at all (apply() says
        # where to configure one).
        return await asyncio.to_thread(api.apply, settings.engine, **options)
    engine = create_async(settings.url)
    if engine is None:  # the URL's driver has no asyncio variant (pysqlite, pymysql, ...)
        return await asyncio.to_thread(api.apply, settings.url, **options)
    try:
        return await run_in_greenlet(api.apply, engine.sync_engine, **options)
    finally:
        await engine.dispose()


async def apply_each_async(
    targets: Iterable[AsyncEngine | Engine | str],
    *,
    on_target: Callable[[str, ApplyResult | BaseException], None] | None = None,
    **options: Any,
) -> FleetResult:
    """:func:`seedguard.apply_each` from async code: every target applied independently,
    one after the other, on the running event loop (other tasks keep running).

    Each target is one :func:`apply_async` (its own ledger, locks and
    failure); a failing target never stops another. As in ``apply_each``,
    a target whose lock another runner holds is left for a final pass that
    waits up to ``lock_timeout``, so many runners can share one fleet.

    One target at a time: two runs interleaved on one event loop share one
    thread, and a process-wide lock of seedguard's (the ledger's alembic
    upgrade holds a ``threading.Lock``) taken by one run while it awaits the
    database would block the other, and with it the loop, for good. Use
    :func:`seedguard.apply_each` (threads) to work on several targets at once.

    :param targets: ``AsyncEngine`` objects and URLs (async drivers run on the
        loop; a sync ``Engine`` or driver runs in a worker thread, as in
        :func:`apply_async`). Tenants' schemas (:class:`seedguard.Schema`) are
        for :func:`seedguard.apply_each`.
    :param on_target: called as each target finishes with its label and its
        ``ApplyResult`` or exception.
    :param options: :func:`apply_async`'s keywords, for every target (not
        ``lock_path``: every target has its own file lock).
    :returns: a :class:`seedguard.FleetResult`.
    :raises ConfigError: a bad option, duplicate labels or a ``Schema`` target.
    """
    import inspect

    from seedguard.errors import LockTimeout
    from seedguard.fleet import FleetResult, labelled_targets
    from seedguard.schema import Schema

    known = frozenset(name for name, parameter in inspect.signature(apply_async).parameters.items()
                      if parameter.kind is parameter.KEYWORD_ONLY) - {"lock_path"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"apply_each_async() got unknown option(s) {unknown}; it takes "
                          f"apply_async()'s keywords but lock_path: {sorted(known)}")
    # An AsyncEngine is labelled by its URL, as an Engine is.
    labelled = labelled_targets(cast("Iterable[Any]", targets))
    if any(isinstance(target, Schema) for _, target in labelled):
        raise ConfigError("apply_each_async() applies to whole databases (AsyncEngines, "
                          "URLs); for tenants' schemas use seedguard.apply_each()")
    result = FleetResult()

    async def attempt(label: str, target: Any, with_options: dict[str, Any],
                      defer_locked: bool) -> bool:
        """Apply one target; True when it was locked and left for the final pass."""
        try:
            outcome: ApplyResult | BaseException = await apply_async(target, **with_options)
        except LockTimeout as err:
            if defer_locked:
                return True
            outcome = err
        except Exception as err:
            outcome = err
        result.record(label, outcome)
        if on_target is not None:
            on_target(label, outcome)
        return False

    later = [(label, target) for label, target in labelled
             if await attempt(label, target, {**options, "lock_timeout": 0}, True)]
    for label, target in later:
        await attempt(label, target, options, False)
    result.in_order([label for label, _ in labelled])
    return result


def create_async(url_text: str) -> AsyncEngine | None:
    """An ``AsyncEngine`` for ``url_text``; None when its driver has no asyncio variant."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError
    from sqlalchemy.ext.asyncio import create_async_engine

    from seedguard.connect import check_spelling, create, safe_url

    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError):
        create(url_text)  # raises the ConfigError that shows a URL's expected shape
        raise
    check_spelling(url)
    try:
        return create_async_engine(url)
    except InvalidRequestError:
        # "The asyncio extension requires an async driver to be used": a sync
        # driver's URL, which apply_async() runs in a thread instead.
        return None
    except NoSuchModuleError as err:
        raise ConfigError(f"unknown database dialect or driver in {safe_url(url)}: "
                          f"{url.drivername!r}; check the part before ://") from err
    except ImportError as err:
        raise ConfigError(f"the async driver for {safe_url(url)} is not installed "
                          f"({err.name or err}); {INSTALL_ASYNC}") from err
