"""One apply() run against one engine, from its start: its events, its first look, then the runner.

Most start-ups find every selected unit applied. Telling that needs the
units' checksums and one lock-free read of the ledger
(:func:`seedguard.planning.first_look`), not the runner with its run
context, guard, sessions, locks and alembic gate, whose import was a third of
an app's first ``apply()`` at 1,000 units (bench/targets.py, target 2b): this
module takes the look and imports :mod:`seedguard.runner` only when the look
finds work, or cannot tell.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from seedguard.errors import SeedguardError
from seedguard.events import Listener, Run, RunFinished, RunStarted
from seedguard.ledger import Ledger
from seedguard.planning import first_look
from seedguard.result import ApplyResult
from seedguard.verify import translate_session_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.config import Settings
    from seedguard.review import Plan as ReviewedPlan
    from seedguard.unit import SeedUnit


@translate_session_errors
def run(
    engine: Engine,
    units: Sequence[SeedUnit],
    settings: Settings,
    *,
    dry_run: bool = False,
    strict: bool = False,
    listener: Listener | None = None,
    schema: bool = False,
    scoped_sessions: Sequence[scoped_session[Any]] = (),
    session_class: type[Any] | None = None,
    reviewed: ReviewedPlan | None = None,
    bind_key: str | None = None,
) -> ApplyResult:
    """Apply the pending ``units`` (in the given order) to ``engine``.

    ``listener`` receives this run's unit events; the process's subscribers
    receive all of them (:mod:`seedguard.events`). The other keywords go to
    :func:`seedguard.runner.run_after_look`, which says what they do.
    """
    if "opentelemetry.trace" in sys.modules:
        # The app uses OpenTelemetry: spans and metrics (seedguard.otel). A
        # process that never imports it pays one dict lookup here.
        from seedguard.otel import install_if_used

        install_if_used()
    with Run(listener) as emit:
        if not emit.quiet:
            emit(RunStarted(emit.id, len(units), dry_run))
        try:
            _not_reentrant()
            # A dry run's answer is its look: it looks even after a caller has.
            first = first_look(engine, Ledger.named(settings.ledger_table,
                                                    settings.ledger_schema), units,
                               read=dry_run or not _LOOKED.get())
            if first.seen is not None and first.seen.all_applied and not schema \
                    and reviewed is None:
                # Nothing to do. A reviewed plan is checked under the locks
                # ("nothing pending" is an answer to check against it too), and
                # schema=True always takes them: the user's schema may be behind.
                result = ApplyResult(skipped=list(first.units), dry_run=dry_run)
            else:
                from seedguard.runner import run_after_look

                result = run_after_look(
                    engine, settings, first, emit=emit, dry_run=dry_run, strict=strict,
                    schema=schema, scoped_sessions=scoped_sessions,
                    session_class=session_class, reviewed=reviewed, bind_key=bind_key)
        except BaseException as err:
            if not emit.quiet:
                emit(RunFinished(emit.id, emit.elapsed_ms(), error=err))
            raise
        if not emit.quiet:
            emit(RunFinished(emit.id, emit.elapsed_ms(), result=result))
        return result


_LOOKED: ContextVar[bool] = ContextVar("seedguard_looked_already", default=False)


@contextlib.contextmanager
def looked_already() -> Iterator[None]:
    """Within it, :func:`run` skips its lock-free looks and goes straight to the locks.

    For a caller that has just read the target's ledger, without a lock, and
    found work to do (``apply_each``'s first pass reads a batch of schemas in
    one statement): looking again before and after the file lock would only
    repeat that read. Nothing rests on it: under both locks the ledger is
    read again and that read decides what runs. A dry run looks all the same
    (its answer is the look).
    """
    token = _LOOKED.set(True)
    try:
        yield
    finally:
        _LOOKED.reset(token)


def _not_reentrant() -> None:
    # No unit runs in a process that has not imported the guard.
    guard = sys.modules.get("seedguard.guard")
    running_unit = guard.current_unit() if guard is not None else None
    if running_unit is not None:
        # Its own file lock is held by this very process: waiting would never end.
        raise SeedguardError(
            f"seedguard.apply() was called inside unit {running_unit.name!r}, which is "
            "itself being applied; apply() is not re-entrant: do the work in the unit "
            "with its session, or declare it as a unit of its own (after=...)"
        )
