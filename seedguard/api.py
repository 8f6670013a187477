"""Library calls behind every command: they return results, never print or exit.

``apply``, ``plan``, ``select`` here; the ledger administration (``status``,
``history``, ``check``, ``stamp``, ``forget``, ``resolve``) in
:mod:`seedguard.admin`, importable from here too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from seedguard import config as _config
from seedguard.connect import engine_for
from seedguard.errors import ConfigError
from seedguard.events import Listener
from seedguard.lazy import lazy_names
from seedguard.registry import (
    SeedsSpec,
    active,
    declared_contexts,
    describe_contexts,
    discover,
    order,
    with_dependencies,
)
from seedguard.result import ApplyResult
from seedguard.schema import Schema
from seedguard.unit import SeedUnit

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - exercised on 3.10 only
    pass

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import scoped_session

    # Ledger administration lives in seedguard.admin, scaffolding (`new`, `init`)
    # in seedguard.scaffold; their calls stay importable from here (__getattr__).
    from seedguard.admin import Bind as Bind
    from seedguard.admin import _ledger_locked as _ledger_locked
    from seedguard.admin import _no_such_unit as _no_such_unit
    from seedguard.admin import _settings as _settings
    from seedguard.admin import check as check
    from seedguard.admin import forget as forget
    from seedguard.admin import forget_all as forget_all
    from seedguard.admin import history as history
    from seedguard.admin import record_stamp as record_stamp
    from seedguard.admin import resolve as resolve
    from seedguard.admin import stamp as stamp
    from seedguard.admin import status as status
    from seedguard.review import Plan as ReviewedPlan
    from seedguard.scaffold import init as init
    from seedguard.scaffold import new as new

# Loaded when first asked for: a start-up that only applies needs neither these
# calls nor their result classes (seedguard.reports), and `import seedguard`
# (every app's) and the CLI's no-op `upgrade` paid for importing them.
_ELSEWHERE = {
    **dict.fromkeys(("Bind", "_ledger_locked", "_no_such_unit", "_settings", "check", "forget",
                     "forget_all", "history", "record_stamp", "resolve", "stamp", "status"),
                    "seedguard.admin"),
    "init": "seedguard.scaffold",
    "new": "seedguard.scaffold",
}


__getattr__ = lazy_names(__name__, _ELSEWHERE)


def apply(
    bind: Engine | str | Schema | None = None,
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
    session_class: type[Any] | None = None,
    plan: ReviewedPlan | str | os.PathLike[str] | None = None,
    lease: float | None = None,
    bind_key: str | None = None,
) -> ApplyResult:
    """Apply every pending selected unit, exactly once across processes and hosts.

    Each unit runs in its own transaction together with its ledger row; a
    failing unit is rolled back and stops the run (units before it stay
    applied). Nothing selected pending costs one query and takes no lock.

    :param bind: an ``Engine``, a database URL, a :class:`~seedguard.Schema`
        (one PostgreSQL schema or MySQL/MariaDB database: its own ledger and
        locks), or ``None``: inside a Flask app context the app's
        Flask-SQLAlchemy engine, else ``SEEDGUARD_URL``, else ``url`` under
        ``[tool.seedguard]`` in pyproject.toml.
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
    :param on_event: called with this call's unit events (started, progress,
        finished, failed; see :mod:`seedguard.events`, whose ``subscribe()``
        receives every event of every run).
    :param lock_mode: ``"session"`` (default: one database lock for the whole
        run) or ``"transaction"`` (PostgreSQL behind PgBouncer in transaction
        pooling: a transaction-level lock per unit, the ledger re-checked under it).
    :param schema: run your ``alembic upgrade head`` first, under the same locks.
        In a Flask app with binds it runs once, before any bind's units, under
        the locks of the default database and of every bind (Flask-Migrate's
        ``--multidb`` upgrade migrates them all), whatever ``bind_key`` selects.
    :param alembic_config: your ``alembic.ini`` (or its folder), for ``schema``
        and for units with ``requires_revision`` (see :mod:`seedguard.alembic`).
    :param scoped_sessions: your ``scoped_session`` objects; while a unit runs
        each returns the unit's session, so code that writes through them joins
        the unit's transaction (a Flask app's ``db.session`` does so by itself).
    :param session_class: the class of every unit's session, bound to the unit's
        transaction as SQLAlchemy's own would be: ``sqlmodel.Session`` (its
        ``.exec()`` and your CRUD helpers work unchanged), or for ``async def``
        units ``sqlmodel.ext.asyncio.session.AsyncSession`` (which also gives
        plain units a ``sqlmodel.Session``). A unit whose session parameter is
        annotated with a Session class gets that class without it.
    :param plan: a reviewed :class:`~seedguard.Plan` (or the path of one that
        ``seedguard plan --out`` wrote): apply only while its digest still
        matches what would run, checked under the locks; else ``PlanStale``
        and nothing runs.
    :param lease: seconds (default 30, at least 5, at most ``lock_timeout``
        when both are given): if this applier's host vanishes while it holds
        the database lock, another applier takes over after about this long,
        and nothing this one did afterwards is recorded. A healthy holder
        keeps its lease however long a unit runs.
    :param bind_key: only the units of this Flask-SQLAlchemy bind (declared
        with ``seed(..., bind=bind_key)``), on that bind's database: the app's,
        inside an app context, else the one ``bind`` gives. ``None``: inside an
        app context, every bind's units, each bind on its own database with
        its own ledger and locks; else the units of the default database.
    :returns: an :class:`~seedguard.ApplyResult`.
    :raises SeedFailed: a unit failed; its work was rolled back (the message
        says so only when that is known), the original error is ``__cause__``.
    :raises LockTimeout: another applier held a lock for longer than ``lock_timeout``.
    :raises ConfigError: no database, a bad URL or setting, a missing seeds module.
    :raises DefinitionError: a bad unit declaration, dependency or cycle.
    :raises PlanStale: ``plan`` no longer matches the pending units, contexts or ledger.

    From async code (an ``AsyncEngine``, an async driver's URL, ``async def``
    units) use :func:`seedguard.apply_async`; this call refuses them.
    """
    with contextlib.ExitStack() as stack:
        ledger_schema = None
        if isinstance(bind, Schema):
            # The schema's ledger, on a copy of the server's engine that enters it.
            ledger_schema = bind.name
            bind = stack.enter_context(bind.engine())
        settings = _config.resolve(
            bind, seeds=seeds, contexts=contexts, lock_path=lock_path, lock_timeout=lock_timeout,
            lock_mode=lock_mode, ledger_schema=ledger_schema, lease=lease,
            alembic_config=os.fspath(alembic_config) if alembic_config is not None else None,
        )
        # The run path pulls in SQLAlchemy; import it here so `import seedguard`
        # stays light (and the runner itself only once there is work:
        # seedguard.startup).
        from seedguard.eventloop import check_units
        from seedguard.startup import run

        if session_class is not None:
            from seedguard.sessionclass import check_default

            check_default(session_class)

        reviewed = None
        if plan is not None:
            from seedguard.review import Plan

            reviewed = plan if isinstance(plan, Plan) else Plan.load(plan)
        from seedguard.binds import targets

        found = targets(settings, select(settings, target=target), bind_key=bind_key)
        if reviewed is not None and len(found) > 1:
            raise _one_database("apply(plan=...)", found)
        migrated: list[str] | None = None
        if schema and not dry_run:
            from seedguard.multidb import covers_binds, upgrade_every_bind

            if covers_binds(settings):
                # A Flask app with binds: the user's upgrade (Flask-Migrate's
                # multidb one migrates every bind) once, under every bind's locks.
                migrated = upgrade_every_bind(settings)
        result = ApplyResult(dry_run=dry_run)
        for index, each in enumerate(found):
            # Each bind is a target of its own: its engine, ledger and locks.
            with engine_for(each.settings) as engine:
                check_units(each.units, engine)
                done = run(engine, each.units, each.settings, dry_run=dry_run, strict=strict,
                           listener=on_event, schema=schema and migrated is None and index == 0,
                           scoped_sessions=list(scoped_sessions), reviewed=reviewed,
                           session_class=session_class, bind_key=each.key)
            if len(found) == 1:
                if migrated is not None:
                    done.migrated = migrated
                return done
            _merge(result, done)
        if migrated is not None:
            result.migrated = migrated
        return result
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow


def _merge(into: ApplyResult, more: ApplyResult) -> None:
    """Add one bind's result to a run's."""
    for name in ("applied", "skipped", "pending", "drifted", "ahead", "waiting", "migrated"):
        getattr(into, name).extend(getattr(more, name))
    into.previews.update(more.previews)


def _one_database(what: str, found: Sequence[Any]) -> ConfigError:
    from seedguard.binds import describe

    names = ", ".join(describe(each.key) for each in found)
    return ConfigError(f"{what} covers one database, and the selected units run on {names}: "
                       "pick one with bind_key= (--bind KEY)")


def plan(
    bind: Engine | str | None = None,
    *,
    seeds: SeedsSpec = None,
    contexts: Iterable[str] | None = None,
    target: str | None = None,
    lock_timeout: float | None = None,
    lock_path: str | os.PathLike[str] | None = None,
    strict: bool = False,
    lock_mode: _config.LockMode | None = None,
    alembic_config: str | os.PathLike[str] | None = None,
    scoped_sessions: Iterable[scoped_session[Any]] = (),
    lease: float | None = None,
    bind_key: str | None = None,
) -> ReviewedPlan:
    """Rehearse the pending units in a transaction that is always rolled back.

    Takes the same locks as :func:`apply`, runs each pending unit on top of the
    ones before it, records the SQL each executed and the rows it inserted,
    updated and deleted per table, then rolls everything back: nothing
    persists, the ledger included. Nothing pending costs one query, no lock.
    Hand the result (or its saved file) to ``apply(plan=...)`` to apply
    exactly what was reviewed.

    :param bind: as for :func:`apply`.
    :param seeds: as for :func:`apply`.
    :param contexts: as for :func:`apply`; they are part of the plan's digest.
    :param target: rehearse only this unit and the units it depends on.
    :param lock_timeout: as for :func:`apply`.
    :param lock_path: as for :func:`apply`.
    :param strict: as for :func:`apply`.
    :param lock_mode: as for :func:`apply`.
    :param alembic_config: as for :func:`apply` (units with ``requires_revision``).
    :param scoped_sessions: as for :func:`apply`.
    :param lease: as for :func:`apply` (the rehearsal holds the same locks).
    :param bind_key: as for :func:`apply`; a plan covers one database, so in
        an app whose selected units run on several binds, pick one.
    :returns: a :class:`~seedguard.Plan`; ``Plan.ok`` is False when a unit
        failed in the rehearsal (its ``error`` says why).
    :raises LockTimeout: another applier held a lock for longer than ``lock_timeout``.
    :raises ConfigError: no database, a bad URL or setting, a missing seeds module.
    :raises DefinitionError: a bad unit declaration, dependency or cycle.
    """
    settings = _config.resolve(
        bind, seeds=seeds, contexts=contexts, lock_path=lock_path, lock_timeout=lock_timeout,
        lock_mode=lock_mode, lease=lease,
        alembic_config=os.fspath(alembic_config) if alembic_config is not None else None,
    )
    from seedguard.binds import targets
    from seedguard.eventloop import check_units
    from seedguard.rehearsal import rehearse

    found = targets(settings, select(settings, target=target), bind_key=bind_key)
    if len(found) > 1:
        raise _one_database("a plan", found)
    settings, units = found[0].settings, found[0].units
    with engine_for(settings) as engine:
        check_units(units, engine)
        return rehearse(engine, units, settings, strict=strict,
                        scoped_sessions=list(scoped_sessions), bind_key=found[0].key)


def select(settings: _config.Settings, *, target: str | None = None) -> list[SeedUnit]:
    """The units a run applies, in order: discovered, ordered, limited to target and contexts."""
    units = order(discover(settings.seeds))
    if target is not None:
        units = with_dependencies(units, target)
        wanted = next(unit for unit in units if unit.name == target)
        if not wanted.runs_in(settings.contexts):
            # Running its dependencies and silently not the unit asked for
            # would report success for work that never happened.
            needed = describe_contexts(wanted.contexts)
            first = sorted(wanted.contexts or ())[0]
            raise ConfigError(
                f"unit {target!r} runs only in context(s) {needed}, and the active context(s) "
                f"are {describe_contexts(settings.contexts)}; activate one (e.g. --context "
                f"{first}, SEEDGUARD_CONTEXTS={first} or contexts=[{first!r}]); nothing ran"
            )
    return active(units, settings.contexts)


def contexts_declared(settings: _config.Settings) -> list[str]:
    """Every context a unit of ``settings.seeds`` declares, sorted: a ``--context``
    that is not among them selects nothing (most likely a typo)."""
    return sorted(declared_contexts(discover(settings.seeds)))
