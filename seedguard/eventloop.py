"""How synchronous seedguard code runs on an event loop, and what it asks of it there.

:func:`seedguard.apply_async` (in :mod:`seedguard.aio`) runs the synchronous
runner under SQLAlchemy's ``greenlet_spawn``. The low-level parts that must
behave differently there ask this module: the file lock's wait sleeps on the
loop (:func:`loop_sleep`), a unit is awaited when it is ``async def``
(:func:`call_unit`), the command line runs on a loop for an async URL
(:func:`run_blocking`). It imports nothing of seedguard's above the errors,
so every layer can use it without an import cycle.

Nothing here imports SQLAlchemy's asyncio extension, greenlet or a driver
until an async call needs it: ``import seedguard`` stays light.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from types import FunctionType
from typing import TYPE_CHECKING, Any, TypeVar

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from seedguard.unit import SeedUnit

T = TypeVar("T")

ASYNC_DRIVERS = "postgresql+asyncpg://, sqlite+aiosqlite://, mysql+aiomysql://"
INSTALL_ASYNC = "pip install 'seedguard[async]'"


async def run_in_greenlet(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, synchronous code, run where async drivers can await."""
    try:
        from sqlalchemy.util import greenlet_spawn
        return await greenlet_spawn(fn, *args, **kwargs)
    except ImportError as err:  # greenlet: SQLAlchemy's asyncio extension needs it
        raise ConfigError(f"async SQLAlchemy needs greenlet ({err}); {INSTALL_ASYNC}") from err


def run_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` (synchronous code) in a new event loop, where async drivers work.

    For the ``seedguard`` command given an async URL: every library call it
    makes then runs through the async driver, ``async def`` units included.
    """
    import asyncio

    return asyncio.run(run_in_greenlet(fn))


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


def is_async_unit(unit: SeedUnit) -> bool:
    fn = unit.fn
    if type(fn) is FunctionType and not hasattr(fn, "_is_coroutine_marker"):
        # A plain function (no inspect.markcoroutinefunction): its code's flag
        # says it, without inspect's unwrapping, which took a tenth of a first
        # start-up at 1,000 units (bench/targets.py).
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


def check_units(units: Sequence[SeedUnit], engine: Engine) -> None:
    """Refuse, before anything runs, ``async def`` units that this run cannot await."""
    if engine.dialect.is_async and in_event_loop():
        return
    refused = _async_units(tuple(units))
    if refused:
        raise _cannot_await(refused[0])


@functools.lru_cache(maxsize=16)
def _async_units(units: tuple[SeedUnit, ...]) -> tuple[SeedUnit, ...]:
    # Asked at every apply(), of the same selection: inspect's checks took a
    # quarter of a warm no-op's time at 1,000 units (bench/targets.py).
    return tuple(unit for unit in units if is_async_unit(unit))


def call_unit(unit: SeedUnit, session: Session, *,
              async_class: type[AsyncSession] | None = None) -> Any:
    """Run ``unit``'s work on ``session``, the Session bound to the unit's connection.

    A plain ``def`` unit is called with ``session``. An ``async def`` unit gets
    an ``AsyncSession`` (of ``async_class``, e.g. SQLModel's, when given) on an
    ``AsyncConnection`` proxy of the same connection, joined the way
    ``session`` joins it (a SAVEPOINT in the unit's transaction, so ``await
    session.commit()`` ends only that), and is awaited on the event loop; its
    session is committed (flushed, SAVEPOINT released) after it returns.
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

    cls = async_class or AsyncSession
    # Its sync side is of the unit session's class (a sqlmodel.Session, say).
    sync_class = type(session)

    async def work() -> Any:
        async with cls(bind=proxy, join_transaction_mode=mode,
                       sync_session_class=sync_class) as async_session:
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
        f"seedguard.apply_async(...)` on an async driver ({ASYNC_DRIVERS}), or with the "
        "`seedguard` command and such a URL"
    )


def is_async_engine(bind: object) -> bool:
    # By its attribute: importing sqlalchemy.ext.asyncio to ask isinstance()
    # would cost every synchronous caller the extension's import.
    return hasattr(bind, "sync_engine") and not isinstance(bind, str)
