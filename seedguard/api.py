"""Library calls behind every command: they return results, never print or exit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import keyword
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from seedguard import config as _config
from seedguard.connect import engine_for
from seedguard.errors import ConfigError
from seedguard.events import Listener
from seedguard.registry import SeedsSpec, active, discover, order, with_dependencies
from seedguard.reports import (
    HistoryResult,
    LedgerChange,
    StatusResult,
    UnitState,
    UnitStatus,
    WrittenFile,
)
from seedguard.result import ApplyResult
from seedguard.unit import SeedUnit, validate_name, validate_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import scoped_session

    from seedguard.ledger import Ledger, LedgerState


def apply(
    bind: Engine | str | None = None,
    *,
    seeds: SeedsSpec = None,
    contexts: Iterable[str] | None = None,
    target: str | None = None,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    lock_path: str | os.PathLike[str] | None = None,
    strict: bool = False,
    on_event: Listener | None = None,
    lock_mode: _config.LockMode | None = None,
    schema: bool = False,
    alembic_config: str | os.PathLike[str] | None = None,
    scoped_sessions: Iterable[scoped_session[Any]] = (),
) -> ApplyResult:
    """Apply every pending selected unit, exactly once across processes and hosts.

    Each unit runs in its own transaction together with its ledger row; a
    failing unit is rolled back and stops the run (units before it stay
    applied). Nothing selected pending costs one query and takes no lock.

    :param bind: an ``Engine``, a database URL, or ``None``: inside a Flask app
        context the app's Flask-SQLAlchemy engine, else ``SEEDGUARD_URL``, else
        ``url`` under ``[tool.seedguard]`` in pyproject.toml.
    :param seeds: which units: a dotted module or package path (its submodules
        are imported too), a module, a ``Registry`` or an iterable of units;
        ``None``: the configured seeds, else every unit declared so far.
    :param contexts: the active contexts; a unit with contexts runs only when
        one of them is active (default: ``SEEDGUARD_CONTEXTS`` or config).
    :param target: apply only this unit and the units it depends on.
    :param dry_run: write nothing (not even the ledger table); the result's
        ``pending`` says what would run, ``previews`` what data seeds would write.
    :param lock_timeout: seconds to wait for the file and database locks, in
        all; ``None`` waits as long as it takes. Raises ``LockTimeout``.
    :param lock_path: the file lock's path (default: beside a SQLite file,
        else a private temp directory keyed by the database).
    :param strict: raise ``DriftError`` if an applied unit's code or data changed.
    :param on_event: called with progress events (see :mod:`seedguard.events`).
    :param lock_mode: ``"session"`` (default: one database lock for the whole
        run) or ``"transaction"`` (PostgreSQL behind PgBouncer in transaction
        pooling: a transaction-level lock per unit, the ledger re-checked under it).
    :param schema: run your ``alembic upgrade head`` first, under the same locks.
    :param alembic_config: your ``alembic.ini`` (or its folder), for ``schema``
        and for units with ``requires_revision`` (see :mod:`seedguard.alembic`).
    :param scoped_sessions: your ``scoped_session`` objects; while a unit runs
        each returns the unit's session, so code that writes through them joins
        the unit's transaction (a Flask app's ``db.session`` does so by itself).
    :returns: an :class:`~seedguard.ApplyResult`.
    :raises SeedFailed: a unit failed; its work was rolled back (the message
        says so only when that is known), the original error is ``__cause__``.
    :raises LockTimeout: another applier held a lock for longer than ``lock_timeout``.
    :raises ConfigError: no database, a bad URL or setting, a missing seeds module.
    :raises DefinitionError: a bad unit declaration, dependency or cycle.
    """
    settings = _config.resolve(
        bind, seeds=seeds, contexts=contexts, lock_path=lock_path, lock_timeout=lock_timeout,
        lock_mode=lock_mode,
        alembic_config=os.fspath(alembic_config) if alembic_config is not None else None,
    )
    # The runner pulls in SQLAlchemy; import it here so `import seedguard` stays light.
    from seedguard.runner import run

    units = select(settings, target=target)
    with engine_for(settings) as engine:
        return run(engine, units, settings, dry_run=dry_run, strict=strict, listener=on_event,
                   schema=schema, scoped_sessions=list(scoped_sessions))


def select(settings: _config.Settings, *, target: str | None = None) -> list[SeedUnit]:
    """The units a run applies, in order: discovered, ordered, limited to target and contexts."""
    units = order(discover(settings.seeds))
    if target is not None:
        units = with_dependencies(units, target)
    return active(units, settings.contexts)


# -- administration: status, history, check, stamp, forget, resolve, new, init ----------
#
# Each takes what apply() takes to find the database and the units (a Settings
# from config.resolve(), an Engine, a URL or None, plus seeds=/contexts=) and
# returns a result from seedguard.reports; none prints or exits. The ledger is
# only written under the same two locks apply() holds, after Ledger.ensure().

Bind = Union["_config.Settings", "Engine", str, None]


def _settings(bind: Bind, *, seeds: SeedsSpec = None,
              contexts: Iterable[str] | None = None) -> _config.Settings:
    if isinstance(bind, _config.Settings):
        return bind
    return _config.resolve(bind, seeds=seeds, contexts=contexts)


def status(bind: Bind = None, *, seeds: SeedsSpec = None,
           contexts: Iterable[str] | None = None) -> StatusResult:
    """Every selected unit's state, the orphaned ledger rows, and who holds the locks now.

    Reads only: no lock is taken and nothing is written, so it answers while
    another process is applying (and names that process).
    """
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import HEAD_REVISION, Ledger, LedgerState
    from seedguard.locking import FileLock, database_lock, default_lock_path, lock_key

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    every = order(discover(settings.seeds))
    units = active(every, settings.contexts)
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with engine_for(settings) as engine:
        with connect(engine) as conn:
            state, revision = _read_any(conn, ledger)
        file_lock = FileLock(settings.lock_path or default_lock_path(engine.url))
        db_lock = database_lock(engine, lock_key(engine, ledger.name, ledger.schema))
        result = StatusResult(
            url=safe_url(engine.url),
            ledger=ledger.qualified_name,
            ledger_exists=state is not None,
            ledger_revision=revision,
            ledger_current=revision is None or revision == HEAD_REVISION,
            file_lock=str(file_lock.path),
            file_lock_holder=file_lock.holder(),
            database_lock_holder=db_lock.holder(),
        )
        rows = state if state is not None else LedgerState()
        # Issue 5: a pending unit whose requires_revision is not applied yet in
        # the user's alembic history is "waiting" (the graph is read only then).
        from seedguard.alembic import RevisionGate, waiting_for

        waits = waiting_for(units, rows, RevisionGate(settings, engine))
    for unit in units:
        item = _unit_status(unit, rows)
        if item.state == "pending" and unit.name in waits:
            item = dataclasses.replace(item, state="waiting", waits_for=waits[unit.name])
        result.units.append(item)
    # Orphaned: recorded, but no unit of that name exists in the code any more
    # (units only filtered out by contexts still exist, so they are not orphans).
    declared = {unit.name for unit in every}
    for name in sorted({name for name, _ in rows} - declared):
        latest = rows.latest(name)
        assert latest is not None
        result.units.append(UnitStatus(
            name=name, state="orphaned", version=None, recorded_version=latest.version,
            applied_at=latest.applied_at, applied_by=latest.applied_by,
        ))
    return result


def _read_any(conn: Connection, ledger: Ledger) -> tuple[LedgerState | None, str | None]:
    """The ledger's rows and revision, also from a ledger an older seedguard made
    (reading never upgrades it: only writes do, under the locks). None: no ledger."""
    state = ledger.read(conn)
    revision = ledger.revision(conn)
    if state is None and revision is not None:
        state = _read_behind(conn, ledger)
    return state, revision


def _read_behind(conn: Connection, ledger: Ledger) -> LedgerState:
    """The rows of a ledger at an older revision: the columns every revision has."""
    import datetime as dt

    import sqlalchemy as sa

    from seedguard.ledger import LedgerRow, LedgerState

    c = ledger.table.c
    query = sa.select(c.name, c.version, c.checksum, c.status, c.applied_at, c.duration_ms,
                      c.applied_by)
    rows = []
    for row in conn.execute(query):
        applied_at = row.applied_at
        if applied_at.tzinfo is None:  # stored naive, in UTC
            applied_at = applied_at.replace(tzinfo=dt.timezone.utc)
        rows.append(LedgerRow(name=row.name, version=row.version, checksum=row.checksum,
                              status=row.status, applied_at=applied_at,
                              duration_ms=row.duration_ms, applied_by=row.applied_by))
    conn.rollback()
    return LedgerState(rows)


def check(bind: Bind = None, *, seeds: SeedsSpec = None,
          contexts: Iterable[str] | None = None) -> StatusResult:
    """:func:`status`, for asking whether the database is done: ``result.ok`` is False
    when a unit is pending, drifted or blocked (``seedguard check`` exits 3 then)."""
    return status(bind, seeds=seeds, contexts=contexts)


def _unit_status(unit: SeedUnit, rows: LedgerState) -> UnitStatus:
    from seedguard.checksum import same_algorithm

    row = rows.get(unit.key)
    latest = rows.latest(unit.name)
    state: UnitState
    if row is None:
        ahead = latest is not None and latest.version > unit.version
        state = "ahead" if ahead else "pending"
        row = latest
    elif row.status == "running":
        state = "blocked"
    else:
        current = unit.checksum()
        drifted = bool(row.checksum) and same_algorithm(row.checksum or "", current) \
            and row.checksum != current
        # A unit that re-applies on change (data seeds by default) is simply
        # pending again, as `upgrade` treats it.
        state = ("pending" if unit.on_change == "rerun" else "drifted") if drifted else "applied"
    return UnitStatus(
        name=unit.name, state=state, version=unit.version,
        recorded_version=row.version if row is not None else None,
        applied_at=row.applied_at if row is not None else None,
        applied_by=row.applied_by if row is not None else None,
        description=unit.description,
    )


def history(bind: Bind = None) -> HistoryResult:
    """The ledger's rows, newest first (empty when there is no ledger yet)."""
    from seedguard.connect import connect, safe_url
    from seedguard.ledger import Ledger

    settings = _settings(bind)
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with engine_for(settings) as engine, connect(engine) as conn:
        state, _ = _read_any(conn, ledger)
        url = safe_url(engine.url)
    rows = state.rows() if state is not None else []
    rows.sort(key=lambda r: (r.applied_at, r.name, r.version), reverse=True)
    return HistoryResult(url=url, ledger=ledger.qualified_name, rows=rows)


@contextlib.contextmanager
def _ledger_locked(settings: _config.Settings) -> Iterator[tuple[Connection, Ledger]]:
    """A connection and the current ledger, under the file and database locks apply() takes."""
    from seedguard.connect import connect
    from seedguard.ledger import Ledger
    from seedguard.locking import both_locks, ledger_locks

    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with engine_for(settings) as engine:
        file_lock, db_lock, deadline = ledger_locks(engine, settings)
        with both_locks(file_lock, db_lock, deadline), connect(engine) as conn:
            if db_lock.per_transaction:
                # lock_mode="transaction" (PgBouncer): no session lock is held, so
                # the read and the write share one transaction that holds the
                # transaction-level lock, like each unit of apply().
                conn.begin()
                db_lock.lock_unit(conn, deadline)
                ledger.ensure(conn, commit=False)
            else:
                ledger.ensure(conn)
            # On an error the connection closes uncommitted: nothing is written.
            yield conn, ledger
            conn.commit()


def _declared(settings: _config.Settings, name: str) -> SeedUnit | None:
    for unit in discover(settings.seeds):
        if unit.name == name:
            return unit
    return None


def _no_such_unit(name: str, settings: _config.Settings) -> ConfigError:
    where = f"the seeds {settings.seeds!r}" if settings.seeds else "the units declared so far"
    return ConfigError(
        f"no unit named {name!r} in {where}; check the name with `seedguard status`, or "
        "point --seeds / SEEDGUARD_SEEDS at the module that declares it"
    )


def stamp(bind: Bind, name: str, *, version: int | None = None,
          seeds: SeedsSpec = None) -> LedgerChange:
    """Record unit ``name`` as applied without running it (baselining a restored database).

    ``version`` defaults to the code's. The current checksum is recorded when
    the version is the code's, so a drifted unit stamped again accepts its new
    code ("restamped"). An interrupted unit is settled with :func:`resolve`.
    """
    settings = _settings(bind, seeds=seeds)
    unit = _declared(settings, name)
    if unit is None:
        raise _no_such_unit(name, settings)
    version = unit.version if version is None else version
    validate_version(name, version)
    checksum = unit.checksum() if version == unit.version else None
    with _ledger_locked(settings) as (conn, ledger):
        row = ledger.read_current(conn).get((name, version))
        if row is None:
            ledger.insert(conn, name, version, checksum)
            action = "stamped"
        elif row.status == "running":
            raise ConfigError(
                f"unit {name!r} v{version} was interrupted mid-way; settle it with "
                f"`seedguard resolve {name} --applied` or `--retry`, not stamp"
            )
        elif checksum is None or row.checksum == checksum:
            action = "unchanged"
        else:
            ledger.finish(conn, name, version, checksum=checksum,
                          duration_ms=row.duration_ms or 0, was="applied")
            action = "restamped"
    return LedgerChange(name, action, [version] if action != "unchanged" else [])


def forget(bind: Bind, name: str, *, version: int | None = None,
           seeds: SeedsSpec = None) -> LedgerChange:
    """Remove the ledger rows of ``name`` (every version, or ``version``) so it runs again.

    Nothing recorded is "unchanged"; a name neither recorded nor declared is
    a ConfigError (most likely a typo).
    """
    settings = _settings(bind, seeds=seeds)
    if version is not None:
        validate_version(name, version)
    with _ledger_locked(settings) as (conn, ledger):
        versions = sorted(v for n, v in ledger.read_current(conn)
                          if n == name and version in (None, v))
        for each in versions:
            ledger.delete(conn, name, each)
    if not versions and _declared(settings, name) is None:
        raise _no_such_unit(name, settings)
    return LedgerChange(name, "forgotten" if versions else "unchanged", versions)


def resolve(bind: Bind, name: str, *, outcome: str) -> LedgerChange:
    """Settle an interrupted non-transactional unit (a ledger row with status "running").

    ``outcome="applied"``: its work is complete, record it applied.
    ``outcome="retry"``: remove the row, so the next apply runs it again.
    Refuses when ``name`` has no such row.
    """
    if outcome not in ("applied", "retry"):
        raise ConfigError(f"resolve outcome must be 'applied' or 'retry', not {outcome!r}")
    settings = _settings(bind)
    with _ledger_locked(settings) as (conn, ledger):
        rows = [row for row in ledger.read_current(conn).rows()
                if row.name == name and row.status == "running"]
        if not rows:
            raise ConfigError(
                f"unit {name!r} is not interrupted (no ledger row of it has status "
                "'running'); resolve only settles blocked units: `seedguard status` lists them"
            )
        for row in rows:
            if outcome == "applied":
                ledger.finish(conn, name, row.version, checksum=row.checksum,
                              duration_ms=row.duration_ms or 0)
            else:
                ledger.delete(conn, name, row.version)
    return LedgerChange(name, f"resolved-{outcome}", [row.version for row in rows])


_TEMPLATE = '''\
"""Seed unit {name!r}: say what it puts in the database and why."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

import seedguard


@seedguard.seed({name!r}, version=1)
def {function}(session: Session) -> None:
    """Runs once per database: its work and its ledger row commit together.

    Raise ``version`` to apply a changed unit again; ``after=[...]`` orders it
    behind other units; ``contexts=[...]`` limits it to e.g. "dev".
    """
    # session.execute(sa.text("INSERT INTO roles (name) VALUES ('admin')"))
    raise NotImplementedError("write the seed work here, then remove this line")
'''


def new(name: str, *, directory: str | os.PathLike[str] = ".") -> WrittenFile:
    """Write ``<directory>/<name>.py``: a seed module declaring one unit called ``name``.

    The template raises NotImplementedError, so an unedited template fails
    (and is not recorded) rather than being applied as an empty unit.
    """
    validate_name(name)
    module = re.sub(r"[^A-Za-z0-9_]", "_", name).lower()
    if not module.isidentifier() or keyword.iskeyword(module):
        module = f"seed_{module}"
    folder = Path(directory)
    path = folder / f"{module}.py"
    if path.exists():
        raise ConfigError(f"{path} already exists; choose another name or --dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:
            fh.write(_TEMPLATE.format(name=name, function=module))
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    return WrittenFile(path, created=True)


def init(*, url: str | None = None, seeds: str | None = None,
         directory: str | os.PathLike[str] = ".") -> WrittenFile:
    """Add a ``[tool.seedguard]`` section with ``url`` and ``seeds`` to ``pyproject.toml``.

    Creates the file if missing; appends to it otherwise, and refuses when it
    already has the section (it is the user's: edit it there).
    """
    if not url and not seeds:
        raise ConfigError("nothing to write: give --url and/or --seeds (e.g. "
                          "`seedguard --url sqlite:///app.db --seeds myapp.seeds init`)")
    path = Path(directory) / "pyproject.toml"
    existing = ""
    if path.exists():
        try:
            existing = path.read_text(encoding="utf-8")
            data = tomllib.loads(existing)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from err
        tool = data.get("tool", {})
        if isinstance(tool, dict) and "seedguard" in tool:
            raise ConfigError(f"{path} already has a [tool.seedguard] section; edit it there")
    lines = ["[tool.seedguard]"]
    # JSON string escapes are valid TOML basic-string escapes.
    lines += [f"{key} = {json.dumps(value)}" for key, value in (("url", url), ("seeds", seeds))
              if value]
    section = "\n".join(lines) + "\n"
    if existing and not existing.endswith("\n"):
        section = "\n" + section
    if existing:
        section = "\n" + section
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(section)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    return WrittenFile(path, created=not existing)
