"""Everything the command shows: text lines, JSON documents, progress lines and bars.

Commands call the library and hand its results here; nothing else in
:mod:`seedguard.cli` writes to the terminal. Every line goes through the
command's :meth:`~seedguard.cli.options.Options.redact`, so no URL secret
reaches the terminal however a message spelled it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

import click

from seedguard.cli.options import Declined, Options
from seedguard.errors import (
    ConfigError,
    DefinitionError,
    DowngradeRefused,
    LockTimeout,
    PlanStale,
    SeedFailed,
    SeedguardError,
    WaitTimeout,
    resolve_advice,
)
from seedguard.events import Event, UnitFinished, UnitProgress, UnitStarted
from seedguard.exits import (
    EXIT_CHECK,
    EXIT_INTERRUPTED,
    EXIT_LOCK_TIMEOUT,
    EXIT_OK,
    EXIT_UNIT_FAILED,
    EXIT_USAGE,
)
from seedguard.settings import as_option

if TYPE_CHECKING:
    from seedguard.fleet import FleetCheck, FleetResult
    from seedguard.reports import HistoryResult, LedgerChange, StatusResult, UnitStatus
    from seedguard.result import ApplyResult


# -- errors ----------------------------------------------------------------------------------


def exit_code(err: BaseException) -> int:
    """The documented exit code for ``err``."""
    if isinstance(err, (LockTimeout, WaitTimeout)):
        return EXIT_LOCK_TIMEOUT
    if isinstance(err, (ConfigError, DefinitionError, PlanStale, Declined)):
        return EXIT_USAGE
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, DowngradeRefused):
        return EXIT_CHECK  # rows changed since, as `diff` reports them
    return EXIT_UNIT_FAILED


def message(err: BaseException) -> str:
    """``err`` in the command line's words: a setting it names is spelled as its option."""
    if isinstance(err, Declined):
        return str(err)
    if isinstance(err, SeedguardError):
        return err.spelled(as_option)
    if isinstance(err, KeyboardInterrupt):
        return ("interrupted (Ctrl-C): the unit that was running was rolled back; units "
                "applied before it stay applied; run the command again to resume")
    if isinstance(err, SystemExit):
        return (f"SystemExit({err.code!r}) raised while running the command (a unit or a "
                "seeds module called sys.exit()); the unit that was running was rolled "
                "back; units applied before it stay applied")
    return f"unexpected {type(err).__name__}: {err}"


def error_document(err: BaseException) -> dict[str, Any]:
    """The ``error`` of a failed command's JSON document."""
    kind = "Declined" if isinstance(err, Declined) else type(err).__name__
    error: dict[str, Any] = {"type": kind, "message": message(err), "exit_code": exit_code(err)}
    unit = getattr(err, "unit", None)
    if isinstance(err, SeedFailed) and unit is not None:
        error["unit"] = getattr(unit, "name", None)
    if isinstance(err, LockTimeout):
        error["lock"] = err.lock
        error["holder"] = err.holder
    if isinstance(err, DowngradeRefused):
        error["unit"] = err.name
        error["rows"] = [row.as_dict() for row in err.rows]
    return error


def failure(opts: Options, err: BaseException) -> None:
    """The one line (or JSON document) that reports a failed command, and with -v its traceback."""
    import traceback

    known = isinstance(err, (SeedguardError, Declined, KeyboardInterrupt))
    if opts.json:
        emit_json({"ok": False, "command": opts.command, **opts.partial,
                   "error": error_document(err)})
    else:
        click.echo(opts.redact(f"error: {message(err)}"), err=True)
    if opts.verbose:
        click.echo(opts.redact("".join(traceback.format_exception(err))), err=True, nl=False)
    elif not known and not opts.json:
        click.echo("(run with -v for the traceback)", err=True)


# -- lines and documents ---------------------------------------------------------------------


def emit_json(document: dict[str, Any]) -> None:
    click.echo(_redacted(json.dumps(document, indent=2, sort_keys=False, default=str)))


def _redacted(text: str) -> str:
    ctx = click.get_current_context(silent=True)
    opts = ctx.find_object(Options) if ctx is not None else None
    return (opts or Options()).redact(text)


def info(opts: Options, text: str) -> None:
    if not opts.quiet:
        click.echo(opts.redact(text))


def warn(opts: Options, text: str) -> None:
    if not opts.quiet:
        click.echo(opts.redact(f"warning: {text}"), err=True)


def line(opts: Options, text: str, *, err: bool = False) -> None:
    """A line shown even with -q: what a command was asked to report."""
    click.echo(opts.redact(text), err=err)


# -- upgrade ---------------------------------------------------------------------------------


class Progress:
    """Per-unit lines as a run goes; on a terminal, a ticking line as a sign of life.

    ``whole_lines`` (with -v): log records go to stderr while a unit runs, so
    the unit's line is written complete at its start and its outcome on a line
    of its own; an open line would be cut in two by every log record.

    Not on a terminal (CI), a unit's line is written whole, in one write, when
    the unit ends: a CI log is stdout and stderr in one, and an open
    "applying ..." line was cut in two by every log line (alembic's INFO lines,
    the app's) written while the unit ran.
    """

    TICK_SECONDS = 0.5

    def __init__(self, out: IO[str], *, tty: bool, whole_lines: bool = False) -> None:
        self.out = out
        self.whole_lines = whole_lines
        self.tty = tty and not whole_lines
        self._lock = threading.Lock()
        self._unit = ""
        self._label = ""
        self._started = 0.0
        self._progress = ""
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, UnitStarted):
            self._unit = f"{event.unit.name} v{event.unit.version}"
            self._begin(f"applying {self._unit} ...")
        elif isinstance(event, UnitFinished):
            self._end(f"done {event.duration_ms} ms")
        elif isinstance(event, UnitProgress):
            total = f" / {event.total}" if event.total else ""
            percent = f" ({100 * event.done / event.total:.0f}%)" if event.total else ""
            with self._lock:
                self._progress = f"{event.done}{total}{percent}"

    def _begin(self, label: str) -> None:
        if not self.whole_lines and _app_logs_to_terminal():
            self.whole_lines, self.tty = True, False
        with self._lock:
            self._label, self._started, self._progress = label, time.monotonic(), ""
            if self.whole_lines or self.tty:
                self.out.write(label + ("\n" if self.whole_lines else " "))
                self.out.flush()
        if self.tty:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._tick, args=(self._stop,), daemon=True,
                                            name="seedguard-progress")
            self._thread.start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.TICK_SECONDS):
            with self._lock:
                elapsed = time.monotonic() - self._started
                detail = f"{self._progress}, " if self._progress else ""
                self.out.write(f"\r\x1b[K{self._label} {detail}{elapsed:.0f} s")
                self.out.flush()

    def _end(self, outcome: str) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._stop = self._thread = None
        with self._lock:
            if not self._label:
                return
            if self.tty:
                self.out.write(f"\r\x1b[K{self._label} ")
            if self.whole_lines:
                self.out.write(f"{self._unit}: {outcome}\n")
            elif self.tty:
                self.out.write(outcome + "\n")
            else:
                self.out.write(f"{self._label} {outcome}\n")
            self.out.flush()
            self._label = ""

    def close(self) -> None:
        """End a line left open by a unit that failed."""
        self._end("failed")


def _app_logs_to_terminal() -> bool:
    """Whether a logging handler writes to stdout or stderr, where progress lines go."""
    loggers = [logging.getLogger(), *(logger for logger in
                                      list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if stream is None or isinstance(handler, logging.FileHandler):
                continue
            if stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                return True
            try:
                if stream.fileno() in (1, 2):
                    return True
            except (AttributeError, OSError, ValueError):  # StringIO: a capture, not a terminal
                continue
    return False


def item(unit: Any) -> dict[str, Any]:
    return {"name": unit.name, "version": unit.version}


def apply_document(result: ApplyResult) -> dict[str, Any]:
    """The ``upgrade --json`` document for a finished run."""
    return {
        "ok": True,
        "command": "upgrade",
        "dry_run": result.dry_run,
        "applied": [{**item(a), "duration_ms": a.duration_ms} for a in result.applied],
        "skipped": [item(u) for u in result.skipped],
        "pending": [item(u) for u in result.pending],
        "drifted": [{**item(d), "recorded": d.recorded, "current": d.current}
                    for d in result.drifted],
        "ahead": [item(u) for u in result.ahead],
        # upgrade --schema: the user's alembic revisions applied first.
        "migrated": list(getattr(result, "migrated", [])),
        # Units whose requires_revision is not applied yet.
        "waiting": [{**item(w), "revision": w.revision, "via": w.via}
                    for w in result.waiting],
        # --dry-run: what each pending data seed would write.
        "previews": {name: _preview_document(preview)
                     for name, preview in result.previews.items()},
    }


def _preview_counts(preview: Any) -> dict[str, int]:
    fields = ("inserted", "updated", "unchanged", "deleted")
    return {field: int(getattr(preview, field, 0)) for field in fields}


def _preview_document(preview: Any) -> dict[str, Any]:
    return {**_preview_counts(preview),
            "table_exists": not getattr(preview, "table_missing", False)}


def _describe_preview(preview: Any) -> str:
    counts = _preview_counts(preview)
    if getattr(preview, "table_missing", False):
        return f" (would insert {counts['inserted']}; its table does not exist yet)"
    return (f" (would insert {counts['inserted']}, update {counts['updated']}, "
            f"delete {counts['deleted']}; {counts['unchanged']} unchanged)")


def applied_before_failure(opts: Options, finished: list[dict[str, Any]]) -> None:
    """What a failed run did before it: the error line follows."""
    total = sum(entry["duration_ms"] for entry in finished)
    info(opts, f"applied {len(finished)} unit(s) in {total} ms before the failure; "
         "they stay applied")


def applied(opts: Options, result: ApplyResult, *, dry_run: bool) -> None:
    """The text summary of a finished ``upgrade``."""
    migrated = list(getattr(result, "migrated", []))
    if migrated:
        info(opts, f"upgraded the schema: {', '.join(migrated)}")
    for drift in result.drifted:
        warn(opts, drift.message())
    for unit in result.ahead:
        warn(opts, f"unit {unit.name!r}: the ledger holds a version above the code's "
             f"v{unit.version}; not applied (is this code older than the database?)")
    for waiting in result.waiting:  # not an error, the schema comes first
        info(opts, waiting.message())
    if dry_run:
        if not result.pending:
            info(opts, "nothing to apply")
        else:
            info(opts, f"would apply {len(result.pending)} unit(s), in order:")
            for unit in result.pending:
                preview = result.previews.get(unit.name)
                detail = _describe_preview(preview) if preview is not None else ""
                info(opts, f"  {unit.name} v{unit.version}{detail}")
        return
    if result.applied:
        total = sum(a.duration_ms for a in result.applied)
        already = f"; {len(result.skipped)} already applied" if result.skipped else ""
        info(opts, f"applied {len(result.applied)} unit(s) in {total} ms{already}")
    else:
        info(opts, f"nothing to do: {len(result.skipped)} unit(s) already applied")


# -- plan ------------------------------------------------------------------------------------

# Statements shown per unit in the text summary; --json and --out have them all.
_PLAN_STATEMENTS = 3


def plan(opts: Options, rehearsal: Any, out: str | None) -> None:
    if not rehearsal.units:
        info(opts, "nothing to apply")
    else:
        info(opts, f"would apply {len(rehearsal.units)} unit(s), in order "
             "(rehearsed and rolled back):")
    for unit in rehearsal.units:
        if unit.not_rehearsed is not None:
            info(opts, f"  {unit.name} v{unit.version}: not rehearsed: {unit.not_rehearsed}")
            continue
        state = f"FAILED: {unit.error}" if unit.failed else f"{unit.duration_ms} ms"
        info(opts, f"  {unit.name} v{unit.version}: {state}")
        for table, counts in unit.rows.items():
            info(opts, f"    {table}: {counts.inserted} inserted, {counts.updated} updated, "
                 f"{counts.deleted} deleted")
        for statement in unit.statements[:_PLAN_STATEMENTS]:
            info(opts, f"    > {statement[:160]}")
        if len(unit.statements) > _PLAN_STATEMENTS:
            info(opts, f"    ... and {len(unit.statements) - _PLAN_STATEMENTS} more "
                 "statement(s)")
    info(opts, f"digest {rehearsal.digest}")
    if out is not None:
        info(opts, f"wrote {out}; apply exactly this with `seedguard upgrade --plan {out}`")


# -- status, check, history, diff ------------------------------------------------------------

PROBLEMS = ("pending", "waiting", "drifted", "blocked")


def describe(unit: UnitStatus) -> str:
    when = unit.applied_at.isoformat(timespec="seconds") if unit.applied_at else ""
    by = f" by {unit.applied_by}" if unit.applied_by else ""
    if unit.state == "applied":
        return f"applied {when}{by}"
    if unit.state == "waiting":
        return (f"waits for alembic revision {unit.waits_for}; run `alembic upgrade head` "
                "or `seedguard upgrade --schema`")
    if unit.state == "pending":
        if unit.changed is not None:
            return f"{unit.changed} changed since applied {when}; will re-apply"
        if unit.recorded_version is not None:
            return f"v{unit.recorded_version} applied {when}; v{unit.version} not yet"
        return "not applied yet"
    if unit.state == "drifted":
        return (f"applied {when}{by}, but its code or data changed since; raise its version "
                f"to re-apply it, or `seedguard stamp {unit.name}` to accept the change")
    if unit.state == "ahead":
        if unit.changed is not None:
            return (f"the database has newer data for this seed (applied {when}{by}); "
                    f"`seedguard forget {unit.name}` then upgrade to go back to this data")
        return f"the ledger has v{unit.recorded_version} (applied {when}), above the code"
    if unit.state == "blocked":
        return (f"interrupted mid-way (started {when}{by}); check its work, then "
                f"{resolve_advice(unit.name)}")
    if unit.state == "inapplicable":
        return (f"applies only to {', '.join(unit.dialects or ())}, not to this database; "
                "the units after it run without it")
    if unit.state == "inactive":
        contexts = ", ".join(unit.contexts or ())
        return (f"v{unit.recorded_version} applied {when}{by}; runs only in context(s) "
                f"{contexts}, none active")
    return f"v{unit.recorded_version} applied {when}{by}; no longer declared in the code"


def status(opts: Options, result: StatusResult) -> None:
    note = "" if result.ledger_exists else " (not created yet)"
    if not result.ledger_current:
        note = (f" (schema revision {result.ledger_revision}, made by an older seedguard; "
                "the next upgrade, stamp or forget brings it up to date)")
    info(opts, f"database {result.url}, ledger {result.ledger}{note}")
    labels = [unit.name if unit.version is None else f"{unit.name} v{unit.version}"
              for unit in result.units]
    width = max((len(label) for label in labels), default=0)
    for unit, label in zip(result.units, labels, strict=True):
        info(opts, f"  {unit.state:<9} {label:<{width}}  {describe(unit)}")
    if not result.units:
        info(opts, "  no units selected")
    holders = []
    if result.file_lock_holder is not None:
        from seedguard.locks import describe_holder

        holders.append(f"file lock {result.file_lock} held by "
                       f"{describe_holder(result.file_lock_holder)}")
    if result.database_lock_holder:
        holders.append(f"database lock held by {result.database_lock_holder}")
    if result.holder is not None:
        holder = result.holder
        holders.append(f"holder pid {holder['pid']} on {holder['host']} since "
                       f"{holder['since']}, lease renewed {holder['heartbeat']}")
    info(opts, "lock: " + ("; ".join(holders) if holders else "free"))


def check(opts: Options, result: StatusResult) -> None:
    if result.ok:
        info(opts, f"ok: {len(result.by_state('applied'))} unit(s) applied, nothing pending "
             "or drifted")
        return
    for unit in result.units:
        if unit.state in PROBLEMS:
            line(opts, f"{unit.state}: {unit.name} v{unit.version}: {describe(unit)}")


def check_document(result: Any, command: str) -> dict[str, Any]:
    """``check --json`` and ``diff --json``: ``ok`` is the answer, with its exit code."""
    return {"ok": result.ok, "command": command, **result.as_dict(),
            "exit_code": EXIT_OK if result.ok else EXIT_CHECK}


def history(opts: Options, result: HistoryResult) -> None:
    if not result.binds:
        _history_table(opts, result.ledger, result.rows)
        return
    # A Flask app with binds: one table per database, the default's first.
    info(opts, f"the default database {result.url}:")
    _history_table(opts, result.ledger, result.own_rows)
    for key, each in result.binds.items():
        info(opts, f"bind {key!r} {each.url}:")
        _history_table(opts, each.ledger, each.rows)


def _history_table(opts: Options, ledger: str, rows: list[Any]) -> None:
    if not rows:
        info(opts, f"ledger {ledger} is empty or not created yet")
        return
    table = [("applied at (UTC)", "unit", "status", "took", "by")]
    for row in rows:
        # A stamped row was recorded without running: it has no duration.
        stamped = row.status == "applied" and row.duration_ms is None
        took = f"{row.duration_ms} ms" if row.duration_ms is not None else "-"
        table.append((row.applied_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
                      f"{row.name} v{row.version}", "stamped" if stamped else row.status,
                      took, row.applied_by or ""))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        padded = [cell.rjust(w) if i == 3 else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(cells, widths, strict=True))]
        info(opts, "  ".join(padded).rstrip())


def diff(result: Any) -> None:
    for row in result.rows:
        where = f"{row.unit}: {row.table} {row.key!r}"
        if row.state == "deleted":
            click.echo(f"{where}: deleted")
        else:
            changes = ", ".join(f"{column} {seeded!r} -> {now!r}"
                                for column, (seeded, now) in row.columns.items())
            click.echo(f"{where}: changed: {changes}")


# -- stamp, forget, resolve ------------------------------------------------------------------


def change_document(command: str, changes: list[LedgerChange]) -> dict[str, Any]:
    return {"ok": True, "command": command, "changed": any(c.changed for c in changes),
            "changes": [change.as_dict() for change in changes]}


def on_bind(change: LedgerChange) -> str:
    """`` on bind 'audit'`` for a change in a Flask-SQLAlchemy bind's ledger, else nothing."""
    return "" if change.bind is None else f" on bind {change.bind!r}"


def versions(change: LedgerChange) -> str:
    return ", ".join(f"v{v}" for v in change.versions)


# -- fleets ----------------------------------------------------------------------------------


class Bar:
    """Targets done / total and failures, on a terminal only; thread-safe."""

    def __init__(self, total: int, *, show: bool, what: str) -> None:
        self._lock = threading.Lock()
        self._failed = 0
        self._bar: Any = None
        if show and total:
            self._bar = click.progressbar(length=total, label=what, show_pos=True,
                                          file=sys.stderr, item_show_func=self._failures)
            self._bar.__enter__()

    def _failures(self, _item: object) -> str | None:
        return f"{self._failed} failed" if self._failed else None

    def step(self, failed: bool) -> None:
        with self._lock:
            self._failed += failed
            if self._bar is not None:
                self._bar.update(1, current_item=object())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def show_bar(opts: Options, as_json: bool) -> bool:
    return not as_json and not opts.quiet and sys.stderr.isatty()


def _target_error(err: BaseException) -> dict[str, Any]:
    return {"type": type(err).__name__, "message": message(err), "exit_code": exit_code(err)}


def one_line(err: BaseException) -> str:
    """The first line of ``err``'s message: one line per failed target."""
    text = message(err)
    return text.strip().splitlines()[0] if text.strip() else text


def fleet_applied(opts: Options, result: FleetResult, *, targets: int, dry_run: bool,
                  failures: list[str]) -> None:
    for failed in failures:
        click.echo(failed, err=True)
    applied_units = sum(len(r.applied) for r in result.results.values())
    changed = sum(1 for r in result.results.values() if r.applied)
    pending = sum(len(r.pending) for r in result.results.values())
    what = (f"would apply {pending} unit(s)" if dry_run
            else f"applied {applied_units} unit(s) to {changed} target(s)")
    info(opts, f"{targets} target(s): {what}; "
         f"{len(result.results) - changed if not dry_run else len(result.results)} "
         f"{'up to date' if not dry_run else 'read'}; {len(result.failed)} failed")


def fleet_apply_targets(result: FleetResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, done in result.results.items():
        document = apply_document(done)
        del document["ok"], document["command"]
        rows.append({"target": label, "outcome": "applied" if done.applied else "up-to-date",
                     **document})
    for label, err in result.failed.items():
        rows.append({"target": label, "outcome": "failed", "error": _target_error(err)})
    return rows


def fleet_checked(opts: Options, found: FleetCheck, *, targets: int, full: bool) -> None:
    for label, err in found.failed.items():
        click.echo(f"failed: {label}: {one_line(err)}", err=True)
    for label, result in found.results.items():
        if full:
            counts: dict[str, int] = {}
            for unit in result.units:
                counts[unit.state] = counts.get(unit.state, 0) + 1
            info(opts, f"{label}: " + (", ".join(f"{n} {state}" for state, n
                                                 in counts.items()) or "no units"))
        elif not result.ok:
            states = [f"{unit.state} {unit.name}" for unit in result.units
                      if unit.state in PROBLEMS]
            click.echo(f"{label}: {', '.join(states)}")
    up_to_date = len(found.up_to_date) + len(found.results) - len(found.pending)
    info(opts, f"{targets} target(s): {up_to_date} up to date, "
         f"{len(found.pending)} not, {len(found.failed)} failed")


def fleet_check_targets(found: FleetCheck) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"target": label, "outcome": "up-to-date"}
                                  for label in found.up_to_date]
    for label, result in found.results.items():
        rows.append({"target": label, "outcome": "up-to-date" if result.ok else "pending",
                     **result.as_dict()})
    for label, err in found.failed.items():
        rows.append({"target": label, "outcome": "failed", "error": _target_error(err)})
    return rows
