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

import inspect
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.orm import Session

    from seedguard.events import Listener
    from seedguard.registry import SeedsSpec
    from seedguard.result import ApplyResult
    from seedguard.unit import SeedUnit

T = TypeVar("T")

_ASYNC_DRIVERS = "postgresql+asyncpg://, sqlite+aiosqlite://, mysql+aiomysql://"
_INSTALL = "pip install 'seedguard[async]'"


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
    """
    import asyncio

    from seedguard import api
    from seedguard import config as _config

    options: dict[str, Any] = {
        "seeds": seeds, "contexts": contexts, "target": target, "dry_run": dry_run,
        "lock_timeout": lock_timeout, "lock_path": lock_path, "strict": strict,
        "on_event": on_event, "lock_mode": lock_mode, "schema": schema,
        "alembic_config": alembic_config, "scoped_sessions": tuple(scoped_sessions),
    }
    if _is_async_engine(bind):
        return await run_in_greenlet(api.apply, bind.sync_engine, **options)  # type: ignore[union-attr]
    if bind is not None and not isinstance(bind, str):
        assert not _is_async_engine(bind)
        bind = cast("Engine", bind)
        if bind.dialect.is_async:  # an AsyncEngine's sync_engine, passed as it is
            return await run_in_greenlet(api.apply, bind, **options)
        # A sync driver blocks: keep it off the event loop.
        return await asyncio.to_thread(api.apply, bind, **options)
    settings = _config.resolve(bind)  # only to find the URL: apply() resolves the rest
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


async def run_in_greenlet(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, synchronous code, run where async drivers can await."""
    try:
        from sqlalchemy.util import greenlet_spawn
        return await greenlet_spawn(fn, *args, **kwargs)
    except ImportError as err:  # greenlet: SQLAlchemy's asyncio extension needs it
        raise ConfigError(f"async SQLAlchemy needs greenlet ({err}); {_INSTALL}") from err


def run_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` (synchronous code) in a new event loop, where async drivers work.

    For the ``seedguard`` command given an async URL: every library call it
    makes then runs through the async driver, ``async def`` units included.
    """
    import asyncio

    return asyncio.run(run_in_greenlet(fn))


def create_async(url_text: str) -> AsyncEngine | None:
    """An ``AsyncEngine`` for ``url_text``; None when its driver has no asyncio variant."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError
    from sqlalchemy.ext.asyncio import create_async_engine

    from seedguard.connect import create, safe_url

    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError):
        create(url_text)  # raises the ConfigError that shows a URL's expected shape
        raise
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
                          f"({err.name or err}); {_INSTALL}") from err


def is_async_url(url_text: str | None) -> bool:
    """Whether ``url_text`` names an async driver (``postgresql+asyncpg://`` ...)."""
    scheme = (url_text or "").partition("://")[0]
    if "+" not in scheme:  # a dialect's default driver is never an async one
        return False
    from sqlalchemy.engine import make_url

    try:
        return bool(make_url(url_text or "").get_dialect().is_async)
    except Exception:  # unknown or unparseable: the command itself reports it
        return False


def in_event_loop() -> bool:
    """Whether we run under ``greenlet_spawn``, where ``await_only`` reaches the loop."""
    if "greenlet" not in sys.modules:  # nothing imported greenlet: nothing spawned one
        return False
    from sqlalchemy.util.concurrency import in_greenlet

    return in_greenlet()


def loop_sleep() -> Callable[[float], None] | None:
    """How a lock wait sleeps between polls: on the event loop under :func:`apply_async`.

    None outside it: the caller waits in its own blocking way.
    """
    if not in_event_loop():
        return None
    import asyncio

    await_ = _await_function()

    def sleep(seconds: float) -> None:
        await_(asyncio.sleep(seconds))

    return sleep


def require_sync_context(engine: Any) -> None:
    """Refuse an ``AsyncEngine``, or an async driver outside the event loop, with the fix."""
    from seedguard.connect import safe_url

    if _is_async_engine(engine):
        raise ConfigError(
            f"{safe_url(engine.url)} is an AsyncEngine; seedguard.apply() and the other "
            "library calls are synchronous: use `await seedguard.apply_async(engine)`"
        )
    if engine.dialect.is_async and not in_event_loop():
        raise ConfigError(
            f"{safe_url(engine.url)} uses the async driver {engine.dialect.driver!r}; "
            "seedguard.apply() and the other library calls are synchronous: use `await "
            "seedguard.apply_async(...)` from async code (the `seedguard` command accepts "
            "the URL as it is), or a sync driver's URL"
        )


def is_async_unit(unit: SeedUnit) -> bool:
    return inspect.iscoroutinefunction(unit.fn)


def check_units(units: Sequence[SeedUnit], engine: Engine) -> None:
    """Refuse, before anything runs, ``async def`` units that this run cannot await."""
    if engine.dialect.is_async and in_event_loop():
        return
    for unit in units:
        if is_async_unit(unit):
            raise _cannot_await(unit)


def call_unit(unit: SeedUnit, session: Session) -> Any:
    """Run ``unit``'s work on ``session``, the Session bound to the unit's connection.

    A plain ``def`` unit is called with ``session``. An ``async def`` unit gets
    an ``AsyncSession`` on an ``AsyncConnection`` proxy of the same connection,
    joined the way ``session`` joins it (a SAVEPOINT in the unit's transaction,
    so ``await session.commit()`` ends only that), and is awaited on the event
    loop; its session is committed (flushed, SAVEPOINT released) after it returns.
    """
    if not is_async_unit(unit):
        return unit(session)
    conn = session.get_bind()
    if not (conn.dialect.is_async and in_event_loop()):
        raise _cannot_await(unit)
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    assert isinstance(conn, Connection)
    proxy = AsyncConnection(AsyncEngine(conn.engine), conn)
    mode = session.join_transaction_mode
    from seedguard.unit import takes_session

    fn: Callable[..., Any] = unit.fn

    async def work() -> Any:
        async with AsyncSession(bind=proxy, join_transaction_mode=mode) as async_session:
            # Like a plain unit, an async one may take its session or nothing.
            outcome = await (fn(async_session) if takes_session(fn) else fn())
            await async_session.commit()
            return outcome

    return _await_function()(work())


def _await_function() -> Callable[[Any], Any]:
    import sqlalchemy.util

    # SQLAlchemy 2.1 renamed await_only to await_ (the old name is deprecated in 2.2).
    found: Callable[[Any], Any] | None = getattr(sqlalchemy.util, "await_", None)
    return found or sqlalchemy.util.await_only


def _cannot_await(unit: SeedUnit) -> ConfigError:
    return ConfigError(
        f"unit {unit.name!r} is an `async def` unit: run it with `await "
        f"seedguard.apply_async(...)` on an async driver ({_ASYNC_DRIVERS}), or with the "
        "`seedguard` command and such a URL"
    )


def _is_async_engine(bind: object) -> bool:
    # By its attribute: importing sqlalchemy.ext.asyncio to ask isinstance()
    # would cost every synchronous caller the extension's import.
    return hasattr(bind, "sync_engine") and not isinstance(bind, str)
