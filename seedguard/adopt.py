"""Adopting a database that already holds the seeded data: ``stamp --all``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from seedguard.admin import Bind, _ledger_locked, _settings, record_stamp
from seedguard.errors import ConfigError, resolve_advice
from seedguard.registry import SeedsSpec, active, discover, order
from seedguard.reports import LedgerChange

if TYPE_CHECKING:
    from seedguard.config import Settings
    from seedguard.unit import SeedUnit


def stamp_all(bind: Bind = None, *, seeds: SeedsSpec = None,
              contexts: Iterable[str] | None = None,
              bind_key: str | None = None) -> list[LedgerChange]:
    """Record every selected pending unit as applied without running it.

    For a database whose data is there already (seeded by hand or by an older
    tool): afterwards ``upgrade`` runs only what changes later. The units are
    those ``upgrade`` would apply now, decided by the same rule, under the same
    locks; units that wait for an alembic revision, are ahead or already
    applied are left alone. An interrupted non-transactional unit is a
    ConfigError before anything is recorded (settle it with ``resolve``).
    Returns one change per unit recorded, in run order.

    :param bind: an ``Engine``, a URL, or None (the configured database).
    :param seeds: the seeds to select from, as for :func:`seedguard.apply`.
    :param contexts: the active contexts; a unit with contexts is selected
        only when one of them is active.
    :param bind_key: only the units of this Flask-SQLAlchemy bind, as for
        :func:`seedguard.apply`; ``None`` inside an app context: every bind's
        units, each recorded in its own database's ledger under its locks.
    """
    from seedguard.binds import targets

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    units = active(order(discover(settings.seeds)), settings.contexts)
    changes: list[LedgerChange] = []
    for target in targets(settings, units, bind_key=bind_key):
        changes.extend(_stamp_pending(target.settings, target.units, target.key))
    return changes


def _stamp_pending(settings: Settings, units: list[SeedUnit],
                   key: str | None) -> list[LedgerChange]:
    """:func:`stamp_all` on one database: ``units`` are the ones recorded there."""
    from seedguard.alembic import RevisionGate
    from seedguard.binds import describe
    from seedguard.planning import plan

    checksums = {unit.name: unit.checksum() for unit in units}
    changes: list[LedgerChange] = []
    with _ledger_locked(settings) as (conn, ledger):
        state = ledger.read_current(conn)
        planned = plan(units, state, checksums, report=True,
                       revisions=RevisionGate(settings, conn.engine, conn))
        if planned.blocked:
            names = ", ".join(unit.name for unit in planned.blocked)
            raise ConfigError(
                f"unit(s) {names} were interrupted mid-way; settle each with "
                f"{resolve_advice('NAME')} first; nothing was stamped"
                + ("" if key is None else f" on {describe(key)}"))
        for unit in planned.pending:
            row = state.get(unit.key)
            action = record_stamp(conn, ledger, row, unit.name, unit.version,
                                  checksums[unit.name])
            changes.append(LedgerChange(unit.name, action, [unit.version], bind=key))
    return changes
