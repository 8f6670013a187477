"""OpenTelemetry spans and metrics for ``apply()``, as a :mod:`seedguard.events` subscriber.

Install the extra (``pip install seedguard[otel]``) and configure providers
as usual; seedguard uses the globally configured tracer and meter providers.
Per ``apply()`` call:

- one span ``seedguard.apply`` (a start-up with nothing to do costs this one
  span, never one per unit: span volume is the known trap of per-migration
  tracing);
- one child span ``seedguard.unit`` per unit that runs, with
  ``seedguard.unit.name``, ``seedguard.unit.version`` and, where the unit
  reported progress (data seeds do), ``seedguard.unit.rows``; none for units
  already applied; error status and the exception on failure;
- the counter ``seedguard.units.applied`` (one per unit applied, attribute
  ``seedguard.unit.name``) and the histogram ``seedguard.lock.wait``
  (seconds, one recording per lock acquisition; about 0 when the locks were free).

It switches itself on: the first ``apply()`` after the application imported
OpenTelemetry (configuring a provider or auto-instrumentation does) installs
the subscriber. ``import seedguard`` never imports OpenTelemetry, and a
process that does not use it pays nothing. :func:`install` switches it on
explicitly; :func:`uninstall` off.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seedguard.__about__ import __version__
from seedguard.events import (
    Event,
    LockAcquired,
    RunFinished,
    RunStarted,
    UnitFailed,
    UnitFinished,
    UnitProgress,
    UnitStarted,
    subscribe,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SCOPE = "seedguard"
"""The instrumentation scope name of the tracer and the meter."""

_lock = threading.Lock()
_unsubscribe: Callable[[], None] | None = None
_switched_off = False


def install() -> None:
    """Send spans and metrics for every run of this process (idempotent).

    :raises ImportError: ``opentelemetry-api`` is not installed
        (``pip install seedguard[otel]``).
    """
    global _unsubscribe, _switched_off
    with _lock:
        _switched_off = False
        if _unsubscribe is None:
            _unsubscribe = subscribe(_Telemetry())


def uninstall() -> None:
    """Stop sending spans and metrics, also the automatic switch-on, until :func:`install`.

    Runs under way finish their spans unsent.
    """
    global _unsubscribe, _switched_off
    with _lock:
        _switched_off = True
        if _unsubscribe is not None:
            _unsubscribe()
            _unsubscribe = None


def install_if_used() -> None:
    """:func:`install`, once the application has imported OpenTelemetry.

    Asked at each run start: a dict lookup until the application imports it.
    """
    if _unsubscribe is None and not _switched_off and "opentelemetry.trace" in sys.modules:
        install()


@dataclass
class _RunSpans:
    span: Any
    context: Any
    token: object
    units: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    applied: int = 0


class _Telemetry:
    """The subscriber: spans keyed by run id, metrics from the global meter."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self.tracer = trace.get_tracer(SCOPE, __version__)
        meter = metrics.get_meter(SCOPE, __version__)
        self.applied = meter.create_counter(
            "seedguard.units.applied", unit="{unit}",
            description="Seed units applied (committed with their ledger row).")
        self.lock_wait = meter.create_histogram(
            "seedguard.lock.wait", unit="s",
            description="Time an applier waited for seedguard's file and database locks.")
        self.runs: dict[str, _RunSpans] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, UnitStarted):
            self._unit_started(event)
        elif isinstance(event, UnitProgress):
            self._progress(event)
        elif isinstance(event, (UnitFinished, UnitFailed)):
            self._unit_ended(event)
        elif isinstance(event, LockAcquired):
            self.lock_wait.record(event.wait_seconds)
        elif isinstance(event, RunFinished):
            self._run_finished(event)

    def _run_started(self, event: RunStarted) -> None:
        from opentelemetry import context

        span = self.tracer.start_span("seedguard.apply", attributes={
            "seedguard.run": event.run, "seedguard.units.selected": event.units,
            "seedguard.dry_run": event.dry_run})
        ctx = self._trace.set_span_in_context(span)
        # Current for the run, so spans of the database driver's instrumentation
        # (and the unit's own) nest under it.
        token = context.attach(ctx)
        self.runs[event.run] = _RunSpans(span, ctx, token)

    def _unit_started(self, event: UnitStarted) -> None:
        run = self.runs.get(event.run)
        if run is None:
            return
        run.units[event.unit.name] = self.tracer.start_span(
            "seedguard.unit", context=run.context, attributes={
                "seedguard.unit.name": event.unit.name,
                "seedguard.unit.version": event.unit.version})

    def _progress(self, event: UnitProgress) -> None:
        run = self.runs.get(event.run)
        if run is not None and event.unit.name in run.units:
            run.rows[event.unit.name] = event.done

    def _unit_ended(self, event: UnitFinished | UnitFailed) -> None:
        from opentelemetry.trace import Status, StatusCode

        run = self.runs.get(event.run)
        span = run.units.pop(event.unit.name, None) if run is not None else None
        if run is None or span is None:
            return
        rows = run.rows.pop(event.unit.name, None)
        if rows is not None:
            span.set_attribute("seedguard.unit.rows", rows)
        span.set_attribute("seedguard.unit.duration_ms", event.duration_ms)
        if isinstance(event, UnitFailed):
            span.record_exception(event.error)
            span.set_status(Status(StatusCode.ERROR, _describe(event.error)))
        else:
            run.applied += 1
            self.applied.add(1, {"seedguard.unit.name": event.unit.name})
        span.end()

    def _run_finished(self, event: RunFinished) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        run = self.runs.pop(event.run, None)
        if run is None:
            return
        for span in run.units.values():  # interrupted between start and end (Ctrl-C)
            span.end()
        run.span.set_attribute("seedguard.units.applied", run.applied)
        if event.error is not None:
            run.span.record_exception(event.error)
            run.span.set_status(Status(StatusCode.ERROR, _describe(event.error)))
        run.span.end()
        context.detach(run.token)  # type: ignore[arg-type]


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]
