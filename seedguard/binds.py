"""Flask-SQLAlchemy binds as targets: which database a unit runs on, and ``db.session`` in it.

A unit declared with ``bind="audit"`` runs on bind ``audit``'s database: it
is one target (the bind's engine) with its own ledger and its own locks, and
:func:`targets` splits a run's units into one such target per bind key. Inside
an app context the engines are the app's (:mod:`seedguard.flaskapp`); outside
one, the one database a caller gives is the default's, or, with
``bind_key=``, that bind's. The ledger commands ask :func:`home` which
database's ledger records a unit (its bind's) and :func:`databases` for every
database of the app (``history``, ``forget --all``).

While a unit runs, ``db.session`` is the unit's session (:mod:`seedguard.sessions`);
a plain ``Session(bind=conn)`` would send every statement to the unit's
connection, so a model of another bind would be written into the unit's
database. The unit's session routes as Flask-SQLAlchemy's own
``Session.get_bind`` does (by the ``bind_key`` in the table's metadata): the
unit's own bind goes to the unit's connection, a read of another bind to that
bind's engine, and a write through a model or table of another bind is refused
before it runs, naming the bind (it would commit outside the unit's
transaction, or not at all). A write on a connection of another bind's engine
from the unit's own code is refused the same way by the process-wide watch
(:mod:`seedguard.verify`), with :meth:`Routing.refuse`'s words.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError, DefinitionError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from seedguard.config import Settings
    from seedguard.unit import SeedUnit

_NO_KEY: Any = object()
"""A table that names no bind (plain SQLAlchemy metadata): it goes where the session goes."""

ROUTING = "seedguard.binds.routing"
"""The key of a unit session's ``info`` holding its :class:`Routing`."""


def describe(key: str | None) -> str:
    """How messages name a bind: ``bind 'audit'``, or ``the default database``."""
    return "the default database" if key is None else f"bind {key!r}"


# -- which database a table belongs to ----------------------------------------------


def _table_key(table: Any) -> Any:
    """A table's bind key as Flask-SQLAlchemy reads it, or :data:`_NO_KEY`."""
    metadata = getattr(table, "metadata", None)
    info = getattr(metadata, "info", None)
    if isinstance(info, Mapping) and "bind_key" in info:  # Flask-SQLAlchemy 3
        return info["bind_key"]
    own = getattr(table, "info", None)
    if isinstance(own, Mapping) and "bind_key" in own:  # Flask-SQLAlchemy 2
        return own["bind_key"]
    return _NO_KEY


def table_bind_key(table: Any) -> str | None:
    """The bind key of a model or ``Table`` of a Flask-SQLAlchemy bind, else ``None``."""
    found = _table_key(getattr(table, "__table__", table))
    return found if isinstance(found, str) else None


def _clause_key(mapper: Any, clause: Any) -> Any:
    """The bind key of what a statement touches, found the way Flask-SQLAlchemy's
    ``get_bind`` finds it: the mapper's own table first, then a table or DML clause."""
    import sqlalchemy as sa

    if mapper is not None:
        local = getattr(sa.inspect(mapper, raiseerr=False), "local_table", None)
        if local is not None:
            key = _table_key(local)
            if key is not _NO_KEY:
                return key
    if clause is not None:
        if isinstance(clause, sa.Table):
            return _table_key(clause)
        table = getattr(clause, "table", None)
        if getattr(clause, "is_dml", False) and isinstance(table, sa.Table):
            return _table_key(table)
    return _NO_KEY


def _writes(clause: Any) -> bool:
    # A flush asks for the mapper's connection with no statement; an ORM
    # INSERT/UPDATE/DELETE passes its DML statement.
    return clause is None or bool(getattr(clause, "is_dml", False))


# -- the unit's session routes by bind key --------------------------------------------


@dataclass(frozen=True)
class Routing:
    """Where a unit's session sends each bind's statements."""

    own: str | None
    """The unit's bind key: its tables go to the unit's connection."""
    engines: Mapping[str | None, Engine]
    """The app's engines: a read of another bind goes there, as Flask-SQLAlchemy sends it."""

    def engine_key(self, engine: Any) -> tuple[bool, str | None]:
        """``(True, key)`` when ``engine`` is the engine of another bind than the unit's."""
        for key, candidate in self.engines.items():
            if candidate is engine:
                return key != self.own, key
        return False, None

    def refuse(self, key: str | None, what: str) -> BaseException:
        from seedguard.guard import refuse

        if self.own is None:
            fix = f"declare the unit with bind={key!r}"
        elif key is None:
            fix = "declare the unit without bind= (the default database)"
        else:
            fix = f"declare the unit with bind={key!r}"
        return refuse(
            f"a write through {what} goes to {describe(key)} of the Flask app, and the "
            f"unit runs on {describe(self.own)}: it would not be part of the unit's "
            f"transaction; {fix}, or split the work into one unit per database"
        )


def routing_for(unit: SeedUnit | None) -> Routing | None:
    """How the session of ``unit`` routes, or ``None`` when one database is all there is."""
    if unit is None:
        return None
    from seedguard import flaskapp

    app = flaskapp.current_app()
    engines = flaskapp.engines(app) if app is not None else {}
    if unit.bind is None and len(engines) <= 1:
        return None
    return Routing(unit.bind, engines)


def routed(cls: type[Session]) -> type[Session]:
    """``cls`` with a ``get_bind`` that honours the session's :class:`Routing`."""
    with _MAKING:
        found = _ROUTED.get(cls)
        if found is None:
            found = _ROUTED[cls] = _routed(cls)
    return found


_ROUTED: dict[type[Session], type[Session]] = {}
_MAKING = threading.Lock()


def _routed(cls: type[Session]) -> type[Session]:
    def get_bind(self: Session, mapper: Any = None, clause: Any = None, **kw: Any) -> Any:
        routing: Routing | None = self.info.get(ROUTING)
        if routing is not None and kw.get("bind") is None:
            key = _clause_key(mapper, clause)
            if key is not _NO_KEY and key != routing.own:
                if _writes(clause):
                    raise routing.refuse(key, _what(mapper, clause))
                engine = routing.engines.get(key)
                if engine is not None:
                    return engine
        parent: Any = super(routed_class, self)
        return parent.get_bind(mapper, clause=clause, **kw)

    routed_class: type[Session] = type(cls.__name__, (cls,), {
        "get_bind": get_bind, "__module__": cls.__module__,
        "__doc__": cls.__doc__, "__qualname__": cls.__qualname__})
    return routed_class


def _what(mapper: Any, clause: Any) -> str:
    import sqlalchemy as sa

    inspected = sa.inspect(mapper, raiseerr=False) if mapper is not None else None
    if inspected is not None and getattr(inspected, "class_", None) is not None:
        return f"model {inspected.class_.__name__}"
    table = clause if isinstance(clause, sa.Table) else getattr(clause, "table", None)
    return f"table {getattr(table, 'name', '?')!r}"


# -- one target per bind ---------------------------------------------------------------


@dataclass(frozen=True)
class BindTarget:
    """The units of one bind key, and the settings whose engine is that bind's."""

    key: str | None
    settings: Settings
    units: list[SeedUnit]


def app_of(settings: Settings) -> Any | None:
    """The Flask app whose Flask-SQLAlchemy engine the settings' database is, or ``None``
    (no app context, or a database given by an argument, an option or a URL)."""
    from seedguard import flaskapp

    app = flaskapp.current_app()
    if app is None or settings.engine is None \
            or settings.sources.get("url") != "Flask-SQLAlchemy engine":
        return None
    return app


def on_bind(settings: Settings, app: Any | None, key: str | None) -> Settings:
    """``settings`` with bind ``key``'s database: the app's engine of that bind, or,
    with no app (``app_of`` gave ``None``), the settings' own database as given."""
    if app is None or key is None:
        return settings
    return replace(settings, engine=_engine_of(app, key, []), url=None)


def databases(settings: Settings, *, bind_key: str | None = None
              ) -> list[tuple[str | None, Settings]]:
    """Every database the settings stand for: inside a Flask app context whose engine is
    the settings' database, the default one and each bind's (by key, the default first);
    else the one database, as the default's or, with ``bind_key``, as that bind's.

    :raises ConfigError: ``bind_key`` names a bind the app does not have.
    """
    from seedguard import flaskapp

    app = app_of(settings)
    if bind_key is not None or app is None:
        return [(bind_key, on_bind(settings, app, bind_key))]
    keys = sorted(flaskapp.engines(app), key=lambda key: (key is not None, key or ""))
    return [(key, on_bind(settings, app, key)) for key in keys]


def home(settings: Settings, unit: SeedUnit, *, bind_key: str | None = None) -> Settings:
    """The settings of the database ``unit`` is recorded in: its bind's.

    :param settings: the command's settings.
    :param unit: the declared unit.
    :param bind_key: the bind the caller says the unit is on (``None``: wherever
        it is declared to be).
    :raises ConfigError: ``bind_key`` is not the unit's bind (the message says
        which it is); a unit of a bind, with no app to find its database and no
        ``bind_key`` saying that the settings' database is that bind's.
    """
    if bind_key is not None and unit.bind != bind_key:
        declared = "" if unit.bind is None else f" (declared with bind={unit.bind!r})"
        fix = ("leave out bind_key= (--bind)" if unit.bind is None
               else f"use bind_key={unit.bind!r} (--bind {unit.bind}), or leave it out")
        raise ConfigError(
            f"unit {unit.name!r} runs on {describe(unit.bind)}{declared}, not on "
            f"{describe(bind_key)}, and is recorded in that database's ledger; {fix}"
        )
    app = app_of(settings)
    if app is None and unit.bind is not None and bind_key is None:
        raise _needs_app(unit)
    return on_bind(settings, app, unit.bind)


def _needs_app(unit: SeedUnit) -> ConfigError:
    return ConfigError(
        f"unit {unit.name!r} runs on the Flask-SQLAlchemy bind {unit.bind!r}, "
        "whose database only a Flask app context knows: run `flask seedguard "
        "upgrade`, call apply() inside `with app.app_context():`, or give that "
        f"bind's database with bind_key={unit.bind!r} (--bind {unit.bind})"
    )


def targets(settings: Settings, units: Sequence[SeedUnit], *,
            bind_key: str | None = None) -> list[BindTarget]:
    """``units`` (in run order) as one target per bind key, in an order that runs every
    unit after the units it depends on.

    Inside a Flask app context whose Flask-SQLAlchemy engine is the settings'
    database, each bind key's engine is that bind's. Otherwise the settings'
    database is the default one, or bind ``bind_key``'s when that is given.

    :param settings: the run's settings.
    :param units: the selected units, in run order.
    :param bind_key: only this bind's units (``None``: every bind's).
    :raises ConfigError: a bind the app does not have; units of a bind with
        no app to find its database.
    :raises DefinitionError: units that depend on each other across two
        databases both ways (no order runs them).
    """
    app = app_of(settings)
    if bind_key is not None:
        units = [unit for unit in units if unit.bind == bind_key]
        return [BindTarget(bind_key, on_bind(settings, app, bind_key), list(units))]
    groups: dict[str | None, list[SeedUnit]] = {}
    for unit in units:
        groups.setdefault(unit.bind, []).append(unit)
    if not groups:
        groups[None] = []
    if app is None:
        others = [unit for unit in units if unit.bind is not None]
        if others:
            raise _needs_app(others[0])
        return [BindTarget(None, settings, groups[None])]
    found = []
    for key in _in_dependency_order(groups):
        engine = settings.engine if key is None else _engine_of(app, key, groups[key])
        found.append(BindTarget(key, replace(settings, engine=engine, url=None), groups[key]))
    return found


def _engine_of(app: Any, key: str, units: list[SeedUnit]) -> Engine:
    from seedguard import flaskapp

    try:
        return flaskapp.bind_engine(app, key)
    except ConfigError as err:
        if not units:
            raise
        names = ", ".join(repr(unit.name) for unit in units[:3])
        raise ConfigError(f"unit(s) {names} declare bind={key!r}: {err}") from err


def _in_dependency_order(groups: dict[str | None, list[SeedUnit]]) -> list[str | None]:
    """The bind keys in the order their first units run (the default database first
    when nothing says otherwise), refusing dependencies both ways between two binds."""
    home = {unit.name: key for key, units in groups.items() for unit in units}
    needs: dict[str | None, set[str | None]] = {key: set() for key in groups}
    for key, units in groups.items():
        for unit in units:
            for dep in unit.after:
                other = home.get(dep, key)
                if other != key:
                    needs[key].add(other)
    ordered: list[str | None] = []
    left = sorted(groups, key=lambda key: (key is not None, key or ""))
    while left:
        ready = [key for key in left if needs[key] <= set(ordered)]
        if not ready:
            names = ", ".join(describe(key) for key in left)
            raise DefinitionError(
                f"units on {names} depend on each other both ways; each database's units "
                "run together, so move the units that close the loop to one database"
            )
        ordered.append(ready[0])
        left.remove(ready[0])
    return ordered
