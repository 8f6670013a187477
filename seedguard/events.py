"""Events of a run, for progress output, hooks and telemetry.

Every :func:`seedguard.apply` call is one run. It sends, in this order:
:class:`RunStarted`; when there is work, :class:`LockWaiting` and
:class:`LockAcquired` around taking the locks; for each unit that runs
:class:`UnitStarted` then :class:`UnitFinished` or :class:`UnitFailed`
(a long unit sends :class:`UnitProgress` in between through
:func:`report_progress`); and :class:`RunFinished`, also when the run
failed. Units that are already applied send nothing.

The process-wide subscribers of :func:`subscribe` get all of them (the
CLI's progress output and :mod:`seedguard.otel` are subscribers); a run's own
listener (``apply(..., on_event=...)``) gets its unit events (started,
progress, finished, failed). A receiver that
raises is logged and the run goes on: a broken hook must not fail a deploy.

It stays cheap: with no subscriber and no listener, sending an event is one
test of an empty tuple, so a start-up with nothing to do pays nothing for it.

While a run is under way, every log record of a ``seedguard`` logger carries
``seedguard_run`` (the run's id) and ``seedguard_unit`` (the running unit's
name, or None between units) as attributes, so a JSON log formatter gets them
as fields (:class:`Run` is the context that sets them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seedguard.unit import SeedUnit

if TYPE_CHECKING:
    from seedguard.result import ApplyResult

log = logging.getLogger("seedguard.progress")
_hooks_log = logging.getLogger("seedguard.events")

PROGRESS_LOG_SECONDS = 5.0


@dataclass(frozen=True)
class RunStarted:
    """An ``apply()`` call began; ``units`` is how many units it selected."""

    run: str
    units: int
    dry_run: bool = False


@dataclass(frozen=True)
class LockWaiting:
    """The run has work and is about to take the file lock, then the database lock.

    ``lock`` is the file lock's path; ``timeout`` the ``lock_timeout`` in
    seconds (None: no limit).
    """

    run: str
    lock: str
    timeout: float | None


@dataclass(frozen=True)
class LockAcquired:
    """The locks are held (or the file lock showed that another applier did the work).

    ``wait_seconds`` is the time since :class:`LockWaiting`: close to 0 when the
    locks were free (a connection and one query), else how long another
    applier kept this one waiting.
    """

    run: str
    wait_seconds: float


@dataclass(frozen=True)
class UnitStarted:
    """A unit's ledger row is claimed and its work starts (units already applied send none)."""

    unit: SeedUnit
    run: str = ""


@dataclass(frozen=True)
class UnitFinished:
    """A unit was applied; its work and ledger row are committed."""

    unit: SeedUnit
    duration_ms: int
    run: str = ""


@dataclass(frozen=True)
class UnitFailed:
    """A unit failed; ``error`` is what the run raises (a ``SeedFailed`` most often)."""

    unit: SeedUnit
    duration_ms: int
    error: BaseException
    run: str = ""


@dataclass(frozen=True)
class UnitProgress:
    """The running unit called :func:`report_progress`: ``done`` of ``total`` (None: unknown)."""

    unit: SeedUnit
    done: int
    total: int | None
    run: str = ""


@dataclass(frozen=True)
class RunFinished:
    """The run ended: ``result`` when it succeeded, ``error`` when it raised."""

    run: str
    duration_ms: int
    result: ApplyResult | None = None
    error: BaseException | None = None


_UNIT_EVENTS = (UnitStarted, UnitProgress, UnitFinished, UnitFailed)
"""What a run's own listener (``apply(on_event=...)``) receives, as it always has."""

Event = (RunStarted | LockWaiting | LockAcquired | UnitStarted | UnitFinished | UnitFailed
         | UnitProgress | RunFinished)
Listener = Callable[[Event], None]

# Copy-on-write, so sending needs no lock and a subscriber may unsubscribe
# while an event is being sent.
_subscribers: tuple[Listener, ...] = ()
_subscribers_lock = threading.Lock()


def subscribe(callback: Listener) -> Callable[[], None]:
    """Send every event of every run in this process to ``callback``.

    :param callback: called with each event, in the thread of the run that
        sends it; what it raises is logged (logger ``seedguard.events``) and
        the run goes on.
    :returns: a function that unsubscribes ``callback`` (calling it twice is fine).
    """
    global _subscribers
    with _subscribers_lock:
        _subscribers = (*_subscribers, callback)

    def unsubscribe() -> None:
        global _subscribers
        with _subscribers_lock:
            if callback in _subscribers:
                index = _subscribers.index(callback)
                _subscribers = _subscribers[:index] + _subscribers[index + 1:]

    return unsubscribe


def _deliver(receiver: Listener, event: Event) -> None:
    try:
        receiver(event)
    except Exception:
        _hooks_log.exception("event receiver %r raised on %s; the run goes on",
                             receiver, type(event).__name__)


class Run:
    """One run's sender: the run's id, its listener and the subscribers.

    Callable as a :data:`Listener`, so the runner passes it where it passed
    the listener before.
    """

    __slots__ = ("_token", "id", "listener", "started")

    def __init__(self, listener: Listener | None) -> None:
        # os.urandom, not uuid: nothing to import on the no-op start-up.
        self.id = os.urandom(6).hex()
        self.listener = listener
        self.started = time.perf_counter()
        self._token: Token[_LogContext | None] | None = None

    def __enter__(self) -> Run:
        """Tag seedguard's log records in this context with this run (and the unit, see
        :func:`unit_context`) until the run ends. A class, not a generator: every
        start-up enters it."""
        if not _factory_installed:
            _install_record_factory()
        self._token = _log_context.set(_LogContext(self.id))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _log_context.reset(self._token)
            self._token = None

    @property
    def quiet(self) -> bool:
        """Nobody listens: the caller may skip building an event."""
        return self.listener is None and not _subscribers

    def __call__(self, event: Event) -> None:
        if self.listener is not None and isinstance(event, _UNIT_EVENTS):
            _deliver(self.listener, event)
        for subscriber in _subscribers:
            _deliver(subscriber, event)

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


@dataclass
class _LogContext:
    run: str
    unit: SeedUnit | None = None


_log_context: ContextVar[_LogContext | None] = ContextVar("seedguard_log_context", default=None)
_factory_installed = False
_factory_lock = threading.Lock()


def _install_record_factory() -> None:
    """Chain a LogRecord factory that adds the run and unit to seedguard's records.

    A factory rather than a filter: filters on a logger apply only to records
    logged on that very logger, not to its children, and seedguard logs on one
    logger per module (the logging cookbook's "Using LogRecord factories").
    """
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            context = _log_context.get()
            if context is not None and record.name.startswith("seedguard"):
                record.seedguard_run = context.run
                record.seedguard_unit = context.unit.name if context.unit is not None else None
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


@contextlib.contextmanager
def unit_context(unit: SeedUnit) -> Iterator[None]:
    """Tag seedguard's log records with ``unit`` while it is claimed, run and recorded."""
    context = _log_context.get()
    if context is None:
        yield
        return
    token = _log_context.set(_LogContext(context.run, unit))
    try:
        yield
    finally:
        _log_context.reset(token)


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
        run = state.listener.id if isinstance(state.listener, Run) else ""
        state.listener(UnitProgress(state.unit, done, total, run))
    now = time.monotonic()
    if now - state.last_log >= PROGRESS_LOG_SECONDS:
        state.last_log = now
        if total:
            log.info("%s: %d / %d (%.0f%%)", state.unit.name, done, total, 100 * done / total)
        else:
            log.info("%s: %d done", state.unit.name, done)
