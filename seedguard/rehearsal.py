"""Rehearse the pending units: run them as apply() would, then roll everything back.

:func:`rehearse` runs every pending unit as ``apply()`` would (under the same
two locks, in the same order, each on top of the ones before it, with the
same guard on what a unit may do) inside one transaction that is always
rolled back, and records per unit the SQL it executed and the rows it
inserted, updated and deleted per table (:class:`seedguard.review.Plan`).
Nothing it does is committed: not the units' work, not a ledger row (a
rehearsal writes none), not the ledger table (a rehearsal never creates or
upgrades it). A rehearsal killed by SIGKILL leaves an open transaction,
which the server discards with the connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seedguard.context import Mode, RunContext, UnitStep
from seedguard.errors import resolve_advice
from seedguard.review import (
    Plan,
    RehearsedUnit,
    RowCounts,
    ledger_rows,
    plan_digest,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.config import Settings
    from seedguard.unit import SeedUnit

# A statement longer than this is cut in the plan (a data seed's batch of
# a thousand rows would otherwise fill a pull-request comment).
STATEMENT_CHARS = 2000
# Parameters whose bound name says they hold a secret are shown as ***.
_SECRET_NAME = re.compile(r"pass|secret|token|credential|api_?key|private", re.IGNORECASE)
# Counting only, for statements given as text (text(), exec_driver_sql): the
# compiled statement names the table of everything else. The guarantee never
# rests on this: a rehearsal is rolled back whatever its statements were.
_TEXT_DML = re.compile(
    r"^\s*(insert|replace|update|delete)\s+(?:(?:ignore|low_priority|into|from)\s+)*"
    r"([`\"\[]?[\w.$]+[`\"\]]?)", re.IGNORECASE)


# -- the rehearsal -------------------------------------------------------------------


def rehearse(engine: Engine, units: Sequence[SeedUnit], settings: Settings, *,
             strict: bool = False, scoped_sessions: Sequence[scoped_session[Any]] = ()
             ) -> Plan:
    """Run the pending ``units`` in a transaction that is always rolled back; see the module."""
    from seedguard.alembic import RevisionGate
    from seedguard.connect import connect, safe_url
    from seedguard.context import RunContext
    from seedguard.dialects import applicable
    from seedguard.ledger import LedgerState
    from seedguard.planning import expected, plan

    # As apply() does: a unit limited to other databases is left out here.
    units = applicable(units, engine)
    checksums = expected(units).checksums
    contexts = list(settings.contexts)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    database = safe_url(engine.url)
    mode = _Rehearsing()
    ctx = RunContext(engine, settings, mode, scoped_sessions=scoped_sessions)
    ledger = ctx.ledger
    with connect(engine) as conn:
        state, _ = ledger.read_any(conn)
    first = plan(units, state or LedgerState(), checksums, strict=strict)
    if not first.pending and not first.blocked:
        # Nothing pending: no lock, nothing run (requirements on the user's
        # alembic revisions only ever hold units back, so are not asked).
        rows = ledger_rows(state, units)
        return Plan([], contexts, plan_digest([], contexts, rows), database, created)

    import sqlalchemy.orm  # noqa: F401  (what units need, imported before the locks)

    with ctx.held():
        conn = ctx.connection
        state, _ = ledger.read_any(conn)
        conn.rollback()
        gate = RevisionGate(settings, engine).with_connection(conn)
        current = plan(units, state or LedgerState(), checksums, strict=strict, revisions=gate)
        conn.rollback()
        pending = [(unit.name, unit.version, checksums[unit.name]) for unit in current.pending]
        rows = ledger_rows(state, units)
        rehearsed = [RehearsedUnit(name, version, checksum)
                     for name, version, checksum in pending]
        rehearsed += [RehearsedUnit(unit.name, unit.version, checksums[unit.name],
                                    not_rehearsed="blocked: it was interrupted mid-way; "
                                    f"settle it first with {resolve_advice(unit.name)}")
                      for unit in current.blocked]
        mode.entries = {entry.name: entry for entry in rehearsed[:len(pending)]}
        try:
            for unit, _ in ctx.run_units(current.pending, current):
                if mode.entries[unit.name].failed:
                    mode.not_run[unit.name] = "failed"
        except _Escaped as escaped:
            entry = mode.entries[escaped.unit.name]
            entry.error = f"{entry.error}; {escaped}" if entry.error else str(escaped)
            for later in rehearsed[rehearsed.index(entry) + 1:]:
                if later.not_rehearsed is None:
                    later.not_rehearsed = (f"the rehearsal stopped at {escaped.unit.name!r}, "
                                           "which ended its transaction")
    return Plan(rehearsed, contexts, plan_digest(pending, contexts, rows), database, created)


class _Rehearsing(Mode):
    """The rehearsal as a mode of the apply loop: each unit in a SAVEPOINT of one outer
    transaction, which is then rolled back; no ledger row, no events."""

    def __init__(self) -> None:
        self.entries: dict[str, RehearsedUnit] = {}
        # Units not run, and why: the units after them are not run either.
        self.not_run: dict[str, str] = {}

    def step_for(self, unit: SeedUnit) -> type[UnitStep]:
        return _Rehearsed

    def runs(self, ctx: RunContext, unit: SeedUnit) -> bool:
        why = _why_not(unit, self.not_run)
        if why is None:
            return True
        self.entries[unit.name].not_rehearsed = why
        self.not_run[unit.name] = why
        return False

    @contextlib.contextmanager
    def units(self, ctx: RunContext) -> Iterator[None]:
        conn = ctx.connection
        outer = conn.begin()
        dbapi_connection: Any = conn.connection.dbapi_connection
        if getattr(dbapi_connection, "in_transaction", None) is False:
            # sqlite3's legacy transaction control opens a transaction only before
            # a DML statement: the first unit's SAVEPOINT would then be the
            # outermost transaction, and its RELEASE a COMMIT. Open it ourselves,
            # taking the write lock as apply()'s first ledger write does.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            # Always, also on Ctrl-C: nothing of a rehearsal is ever committed. The
            # DB-API rollback is the one that counts; SQLAlchemy's only clears its
            # own state, which a unit that ended the transaction has confused.
            with contextlib.suppress(Exception):
                dbapi_connection.rollback()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "nested transaction already deassociated"
                with contextlib.suppress(Exception):
                    outer.rollback()


def _why_not(unit: SeedUnit, not_run: Mapping[str, str]) -> str | None:
    if not unit.transactional:
        return ("transactional=False: its work commits as it goes, so it cannot be "
                "rolled back; it runs only when applied")
    for dep in unit.after:
        if dep in not_run:
            return (f"it runs after {dep!r}, which "
                    + ("failed in this rehearsal" if not_run[dep] == "failed"
                       else "could not be rehearsed"))
    return None


class _Escaped(Exception):
    """A unit ended the rehearsal's transaction: nothing after it can be rehearsed."""

    def __init__(self, unit: SeedUnit) -> None:
        super().__init__(
            "it ended the rehearsal's transaction mid-way (a COMMIT, an implicit commit or a "
            "raw DB-API commit), so PART OF ITS WORK MAY HAVE BEEN COMMITTED by this "
            "rehearsal: check the database; the rehearsal stopped here")
        self.unit = unit


class _Rehearsed(UnitStep):
    """One unit in a SAVEPOINT: released when it succeeds (later units see its rows),
    rolled back when it fails; its statements and row counts recorded."""

    def __init__(self, ctx: RunContext, unit: SeedUnit, current: Any, scope: Any,
                 started: float) -> None:
        super().__init__(ctx, unit, current, scope, started)
        assert isinstance(ctx.mode, _Rehearsing)
        self.entry = ctx.mode.entries[unit.name]

    def recording(self) -> _Recorder:
        return _Recorder(self.conn, self.entry)

    def begin(self) -> bool:
        from seedguard.verify import Canary

        self.savepoint = self.conn.begin_nested()
        # The same verification as a real apply (seedguard.verify): if the unit
        # ends the rehearsal's transaction, what it did so far may be committed,
        # and the rehearsal stops there and says so.
        self.canary = Canary(self.conn)
        self.canary.plant()
        return True

    def finish(self, outcome: Any) -> None:
        from seedguard.guard import ending

        _exact_counts(self.unit, outcome, self.entry)
        if not self.canary.intact():
            raise _Escaped(self.unit)
        with ending(self.scope):
            self.savepoint.commit()  # RELEASE: later units see this one's rows

    def fail(self, err: BaseException, *, in_work: bool) -> BaseException | None:
        from seedguard.context import root_error
        from seedguard.guard import ending

        if not in_work or not isinstance(err, Exception):
            return err  # Ctrl-C, or the rehearsal's own steps: the outer rollback follows
        self.entry.error = root_error(self.scope.refused or err)
        if not self.canary.rolled_back():
            return _Escaped(self.unit)  # its savepoint went with the transaction it ended
        with ending(self.scope):
            self.savepoint.rollback()
        return None  # recorded; the units after it are not run (_why_not)

    def close(self) -> None:
        super().close()
        self.entry.duration_ms = self.elapsed_ms()


def _exact_counts(unit: SeedUnit, outcome: Any, entry: RehearsedUnit) -> None:
    """A data seed counts its own rows exactly (an upsert's statement cannot say
    which of its rows were inserted and which updated)."""
    spec = getattr(unit.preview, "__self__", None)
    table = getattr(spec, "table_name", None)
    if table is None or not hasattr(outcome, "inserted"):
        return
    entry.rows[table] = RowCounts(int(outcome.inserted), int(getattr(outcome, "updated", 0)),
                                  int(getattr(outcome, "deleted", 0)))


class _Recorder:
    """Records the statements a unit executes on ``conn`` and the rows they touch."""

    def __init__(self, conn: Connection, entry: RehearsedUnit) -> None:
        self.conn = conn
        self.entry = entry

    def __enter__(self) -> _Recorder:
        from sqlalchemy import event

        event.listen(self.conn, "before_cursor_execute", self._before)
        event.listen(self.conn, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event

        event.remove(self.conn, "before_cursor_execute", self._before)
        event.remove(self.conn, "after_cursor_execute", self._after)

    def _before(self, conn: Connection, cursor: Any, statement: str, parameters: Any,
                context: Any, executemany: bool) -> None:
        if _is_savepoint(statement):
            return  # the session's own SAVEPOINTs, not the unit's work
        text = " ".join(statement.split())
        if len(text) > STATEMENT_CHARS:
            text = text[:STATEMENT_CHARS] + " ..."
        names = _bind_names(context)
        if executemany:
            sets = list(parameters)
            shown = f"  -- {len(sets)} parameter sets" + (
                f", first: {_shown(sets[0], names)}" if sets else "")
        elif parameters:
            shown = f"  -- {_shown(parameters, names)}"
        else:
            shown = ""
        self.entry.statements.append(text + shown)

    def _after(self, conn: Connection, cursor: Any, statement: str, parameters: Any,
               context: Any, executemany: bool) -> None:
        kind, table = _dml(statement, context)
        if kind is None or table is None:
            return
        count = cursor.rowcount if isinstance(cursor.rowcount, int) else -1
        if count < 0:
            # Unknown to the driver (a multi-row INSERT ... RETURNING not yet
            # fetched): one row per parameter set.
            count = len(parameters) if executemany else 1
        counts = self.entry.rows.setdefault(table, RowCounts())
        setattr(counts, kind, getattr(counts, kind) + count)


def _is_savepoint(statement: str) -> bool:
    head = statement.lstrip()[:20].upper()
    return head.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))


def _dml(statement: str, context: Any) -> tuple[str | None, str | None]:
    """("inserted" | "updated" | "deleted", table) for a statement that changes rows."""
    compiled = getattr(context, "compiled", None)
    dml_table = getattr(getattr(compiled, "statement", None), "table", None)
    if context is not None and dml_table is not None and getattr(dml_table, "name", None):
        kind = ("inserted" if context.isinsert else "updated" if context.isupdate
                else "deleted" if context.isdelete else None)
        return kind, str(dml_table.name)
    match = _TEXT_DML.match(statement)
    if match is None:
        return None, None
    verb = match.group(1).lower()
    kind = {"insert": "inserted", "replace": "inserted", "update": "updated",
            "delete": "deleted"}[verb]
    name = match.group(2).strip('`"[]').rsplit(".", 1)[-1]
    return kind, name


def _bind_names(context: Any) -> Sequence[str] | None:
    compiled = getattr(context, "compiled", None)
    names = getattr(compiled, "positiontup", None)
    return list(names) if names else None


def _shown(parameters: Any, names: Sequence[str] | None) -> str:
    """Parameters as the plan shows them: secrets by bound name as ***, long values cut."""
    if isinstance(parameters, Mapping):
        pairs = [(str(k), v) for k, v in parameters.items()]
        return "{" + ", ".join(f"{k}: {_value(k, v)}" for k, v in pairs) + "}"
    values = list(parameters) if isinstance(parameters, (list, tuple)) else [parameters]
    if names is not None and len(names) == len(values):
        return "(" + ", ".join(_value(n, v) for n, v in zip(names, values, strict=True)) + ")"
    return "(" + ", ".join(_value("", v) for v in values) + ")"


def _value(name: str, value: Any) -> str:
    if name and _SECRET_NAME.search(name):
        return "***"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

