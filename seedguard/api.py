"""Library calls behind every command: they return results, never print or exit."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from seedguard import config as _config
from seedguard.connect import engine_for
from seedguard.events import Listener
from seedguard.registry import SeedsSpec, active, discover, order, with_dependencies
from seedguard.result import ApplyResult
from seedguard.unit import SeedUnit

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


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
    lock_mode: str | None = None,
) -> ApplyResult:
    """Apply every pending selected unit, exactly once across processes and hosts.

    ``bind`` is an Engine, a URL, or None (Flask app context, SEEDGUARD_URL,
    ``[tool.seedguard]``). ``seeds`` selects units (dotted module path, module,
    Registry, iterable of units; None: the configured seeds, else every unit
    declared so far). ``target`` limits the run to one unit and its
    dependencies. ``dry_run`` reports ``pending`` and writes nothing.
    ``lock_timeout`` (seconds) bounds every wait for a lock. ``on_event``
    receives progress events (see :mod:`seedguard.events`). ``lock_mode``:
    ``"session"`` (default: one database lock held for the whole run) or
    ``"transaction"`` (PostgreSQL behind PgBouncer in transaction pooling: a
    transaction-level lock per unit, the ledger re-checked under it).
    """
    settings = _config.resolve(
        bind, seeds=seeds, contexts=contexts, lock_path=lock_path, lock_timeout=lock_timeout,
        lock_mode=lock_mode,
    )
    # The runner pulls in SQLAlchemy; import it here so `import seedguard` stays light.
    from seedguard.runner import run

    units = select(settings, target=target)
    with engine_for(settings) as engine:
        return run(engine, units, settings, dry_run=dry_run, strict=strict, listener=on_event)


def select(settings: _config.Settings, *, target: str | None = None) -> list[SeedUnit]:
    """The units a run applies, in order: discovered, ordered, limited to target and contexts."""
    units = order(discover(settings.seeds))
    if target is not None:
        units = with_dependencies(units, target)
    return active(units, settings.contexts)
