"""Units limited to some databases: ``seed(..., dialects=[...])``.

A unit limited to some dialects is *not applicable* on the others: it is left
out of the run there, ``status`` reports it as ``inapplicable``, and the units
that list it in ``after`` run without it. That differs on purpose from
contexts, where a dependency on a unit that the active contexts leave out is a
:class:`~seedguard.DefinitionError` (a production unit relying on a dev-only
one is a mistake; a portable unit relying on PostgreSQL-only set-up where
there is no PostgreSQL is not).

Names are SQLAlchemy's dialect names, with MySQL's family spelled out:
``"mysql"`` matches MySQL and MariaDB (one SQLAlchemy dialect serves both),
``"mariadb"`` only MariaDB.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from seedguard.errors import DefinitionError

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect, Engine

    from seedguard.unit import SeedUnit

KNOWN = ("mariadb", "mysql", "postgresql", "sqlite")
"""The names ``dialects=`` accepts."""


def parse(unit_name: str, dialects: Iterable[str] | str | None) -> frozenset[str] | None:
    """``dialects=`` as declared, checked: None (every database) or a non-empty set."""
    if dialects is None:
        return None
    names = frozenset([dialects] if isinstance(dialects, str) else dialects)
    unknown = sorted(name for name in names if name not in KNOWN)
    if unknown or not names:
        what = f"unknown dialect(s) {', '.join(map(repr, unknown))}" if unknown else "no dialect"
        raise DefinitionError(
            f"unit {unit_name!r}: {what} in dialects=; use some of {', '.join(KNOWN)}, or "
            "leave dialects out for a unit that runs on every database"
        )
    return names


def names_of(dialect: Dialect) -> frozenset[str]:
    """The ``dialects=`` names that ``dialect`` answers to."""
    name = dialect.name
    if getattr(dialect, "is_mariadb", False):
        # `mysql+pymysql://` to a MariaDB server: SQLAlchemy's name stays "mysql".
        return frozenset(("mysql", "mariadb"))
    return frozenset((name,))


def applicable(units: Sequence[SeedUnit], engine: Engine) -> Sequence[SeedUnit]:
    """The units of ``units`` that apply on ``engine``'s database, in the same order.

    ``units`` itself when every unit applies (the usual case, and the warm
    start-up's: its selection stays the same object, so what is memoised on
    it stays found).
    """
    selection = tuple(units)
    if not _limited(selection):
        return units
    dialect = engine.dialect
    if (dialect.name == "mysql" and dialect.server_version_info is None
            and any(unit.dialects is not None and "mariadb" in unit.dialects
                    and "mysql" not in unit.dialects for unit in units)):
        # SQLAlchemy learns that a `mysql://` URL reached MariaDB on the first
        # connect (is_mariadb is False until then); the connection goes back
        # to the pool for the ledger read that follows.
        with engine.connect():
            pass
    return _applicable(selection, names_of(dialect))


@functools.lru_cache(maxsize=16)
def _limited(units: tuple[SeedUnit, ...]) -> bool:
    # Asked at every apply() of the same selection: a look at each of 1,000
    # units was a tenth of a warm no-op's own time (bench/targets.py).
    return any(unit.dialects is not None for unit in units)


@functools.lru_cache(maxsize=16)
def _applicable(units: tuple[SeedUnit, ...], names: frozenset[str]) -> tuple[SeedUnit, ...]:
    return tuple(unit for unit in units if applies(unit, names))


def applies(unit: SeedUnit, names: Collection[str]) -> bool:
    """Whether ``unit`` applies on a database that answers to ``names``."""
    return unit.dialects is None or not unit.dialects.isdisjoint(names)


def describe(dialects: Collection[str] | None) -> str:
    """Dialects for a message: "postgresql, sqlite" or "every database" (None)."""
    return "every database" if dialects is None else ", ".join(sorted(dialects))
