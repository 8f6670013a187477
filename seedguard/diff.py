"""``seedguard diff``: seeded rows changed or deleted in the database since they were seeded.

A data seed that is applied and unchanged (its ledger checksum is its data's
checksum now) seeded exactly the rows of its data. Its data is compared with
the table the way a dry run compares it, by the same code that writes: a
row the table lacks was deleted since, a row whose columns differ was
changed (the columns the seed writes; others are not its business). Reads
only, in transactions that are rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError
from seedguard.registry import SeedsSpec, active, discover, order

if TYPE_CHECKING:
    from seedguard.admin import Bind
    from seedguard.config import Settings
    from seedguard.data import DataSeed
    from seedguard.unit import SeedUnit


@dataclass
class RowDiff:
    """One seeded row that is no longer as seeded.

    ``state`` is ``"changed"`` or ``"deleted"``; ``columns`` maps each changed
    column to ``(seeded value, value now)``.
    """

    unit: str
    table: str
    key: Any
    state: str
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        key = list(self.key) if isinstance(self.key, tuple) else self.key
        return {"unit": self.unit, "table": self.table, "key": key, "state": self.state,
                "columns": {name: {"seeded": seeded, "now": now}
                            for name, (seeded, now) in self.columns.items()}}


@dataclass
class DiffResult:
    """What :func:`diff` found: ``rows`` that changed, and the data seeds it did not
    compare (``not_compared``: name -> why: pending, or changed since applied)."""

    rows: list[RowDiff] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)
    not_compared: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.rows

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [row.as_dict() for row in self.rows], "compared": list(self.compared),
                "not_compared": dict(self.not_compared)}


def diff(bind: Bind = None, *, name: str | None = None, seeds: SeedsSpec = None,
         contexts: Iterable[str] | None = None, bind_key: str | None = None) -> DiffResult:
    """Compare each applied data seed's data with its table now.

    :param bind: an ``Engine``, a URL, or None (the configured database).
    :param name: only this data seed; a code unit or an unknown name is a
        ConfigError.
    :param seeds: the seeds to select from, as for :func:`seedguard.apply`.
    :param contexts: the active contexts, as for :func:`seedguard.apply`.
    :param bind_key: only the data seeds of this Flask-SQLAlchemy bind, as for
        :func:`seedguard.apply`; ``None`` inside an app context: each bind's
        data seeds, compared on that bind's database with its ledger.
    """
    from seedguard.admin import _no_such_unit, _settings
    from seedguard.binds import home, targets
    from seedguard.data import DataSeed

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    units = active(order(discover(settings.seeds)), settings.contexts)
    specs: list[tuple[SeedUnit, DataSeed]] = []
    for unit in units:
        spec = getattr(unit.preview, "__self__", None)
        if name is not None and unit.name != name:
            continue
        if isinstance(spec, DataSeed):
            specs.append((unit, spec))
        elif name is not None:
            raise ConfigError(
                f"diff compares data seeds with their tables; {name!r} is a code unit, "
                "whose rows seedguard does not know")
    if name is not None and not specs:
        raise _no_such_unit(name, settings)
    if name is not None:
        home(settings, specs[0][0], bind_key=bind_key)  # another bind's: where it lives
    result = DiffResult()
    spec_of = {unit.name: spec for unit, spec in specs}
    for target in targets(settings, [unit for unit, _ in specs], bind_key=bind_key):
        _compare(target.settings, [(unit, spec_of[unit.name]) for unit in target.units],
                 result)
    return result


def _compare(settings: Settings, specs: list[tuple[SeedUnit, DataSeed]],
             result: DiffResult) -> None:
    """:func:`diff` on one database: ``specs`` are its data seeds."""
    from seedguard.connect import connect, read_only_engine
    from seedguard.ledger import Ledger

    if not specs:
        return
    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    with read_only_engine(settings) as engine, connect(engine) as conn:
        state, _ = ledger.read_any(conn)
        conn.rollback()  # each comparison runs in a transaction of its own
        for unit, spec in specs:
            row = state.get(unit.key) if state is not None else None
            if row is None or row.status != "applied":
                result.not_compared[unit.name] = "pending: not seeded yet"
                continue
            if row.checksum != unit.checksum():
                result.not_compared[unit.name] = (
                    "its data changed since it was applied (pending: upgrade re-applies it)")
                continue
            from seedguard.upsert.core import Difference

            found: list[Difference] = []
            with conn.begin() as trans:
                spec.run(conn, dry_run=True, differences=found)
                trans.rollback()
            result.compared.append(unit.name)
            for item in found:
                if item.columns is None:
                    result.rows.append(RowDiff(unit.name, spec.table_name, item.key, "deleted"))
                else:
                    result.rows.append(RowDiff(
                        unit.name, spec.table_name, item.key, "changed",
                        {c: (seeded, now) for c, (now, seeded) in item.columns.items()}))
