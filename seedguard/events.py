"""Progress events, so a caller (the CLI) can show a run as it happens.

The runner sends :class:`UnitStarted` and :class:`UnitFinished` around each
unit. A long unit reports its own progress with :func:`report_progress`, which
logs at INFO at most every few seconds and forwards to the run's listener.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from seedguard.unit import SeedUnit

log = logging.getLogger("seedguard.progress")

PROGRESS_LOG_SECONDS = 5.0


@dataclass(frozen=True)
class UnitStarted:
    unit: SeedUnit


@dataclass(frozen=True)
class UnitFinished:
    unit: SeedUnit
    duration_ms: int


@dataclass(frozen=True)
class UnitProgress:
    unit: SeedUnit
    done: int
    total: int | None


Event = UnitStarted | UnitFinished | UnitProgress
Listener = Callable[[Event], None]


@dataclass
class _Running:
    unit: SeedUnit
    listener: Listener | None
    last_log: float


_running: ContextVar[_Running | None] = ContextVar("seedguard_running_unit", default=None)


@contextlib.contextmanager
def running(unit: SeedUnit, listener: Listener | None) -> Iterator[None]:
    """Mark ``unit`` as the one running in this context, for :func:`report_progress`."""
    token = _running.set(_Running(unit, listener, time.monotonic()))
    try:
        yield
    finally:
        _running.reset(token)


def report_progress(done: int, total: int | None = None) -> None:
    """Report that the running unit has done ``done`` of ``total`` items.

    Cheap enough to call per batch: it logs at most every few seconds. Outside
    a running unit it does nothing.
    """
    state = _running.get()
    if state is None:
        return
    if state.listener is not None:
        state.listener(UnitProgress(state.unit, done, total))
    now = time.monotonic()
    if now - state.last_log >= PROGRESS_LOG_SECONDS:
        state.last_log = now
        if total:
            log.info("%s: %d / %d (%.0f%%)", state.unit.name, done, total, 100 * done / total)
        else:
            log.info("%s: %d done", state.unit.name, done)
