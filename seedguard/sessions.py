"""The unit's session, and the app's own sessions made to be it while the unit runs.

Flask and SQLAlchemy code writes through ``db.session``, ``Model.query`` and
``scoped_session`` registries, often in helpers that call ``commit()``. Each
such registry is pointed at the unit's session for the unit's duration, so
that code joins the unit's transaction (its ``commit()`` ends a savepoint)
instead of committing on a connection of its own. Afterwards each registry
holds exactly what it held before, also after a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session, scoped_session


@contextlib.contextmanager
def unit_session(conn: Connection, registries: Sequence[scoped_session[Any]], *,
                 transactional: bool = True,
                 session_class: type[Session] | None = None) -> Iterator[Session]:
    """A Session on ``conn``, which every one of ``registries`` returns until the block ends.

    In a transactional unit the session joins the unit's transaction with a
    SAVEPOINT (``join_transaction_mode="create_savepoint"``), so a commit
    inside the unit never commits the unit. ``session_class`` (a Session
    subclass such as ``sqlmodel.Session``; see :mod:`seedguard.sessionclass`)
    is made the same way.
    """
    from sqlalchemy.orm import Session

    from seedguard.binds import ROUTING, routed, routing_for
    from seedguard.guard import current_unit

    cls = session_class or Session
    # In a Flask app with binds, the session routes as Flask-SQLAlchemy's does
    # (seedguard.binds): a plain Session(bind=conn) would write another bind's
    # models into the unit's database.
    routing = routing_for(current_unit())
    if routing is not None:
        cls = routed(cls)
    session = (cls(bind=conn, join_transaction_mode="create_savepoint") if transactional
               else cls(bind=conn))
    if routing is not None:
        session.info[ROUTING] = routing
    with contextlib.ExitStack() as stack:
        stack.callback(session.close)
        for registry in _unique(registries):
            stack.enter_context(_pointed_at(registry, session))
        yield session


@contextlib.contextmanager
def _pointed_at(scoped: scoped_session[Any], session: Session) -> Iterator[None]:
    registry = scoped.registry
    previous = registry() if registry.has() else None
    registry.set(session)
    try:
        yield
    finally:
        if previous is not None:
            registry.set(previous)
        else:
            registry.clear()


def _unique(registries: Iterable[scoped_session[Any]]) -> list[scoped_session[Any]]:
    seen: dict[int, scoped_session[Any]] = {}
    for registry in registries:
        seen.setdefault(id(registry), registry)
    return list(seen.values())


def app_sessions(engine: Engine) -> list[scoped_session[Any]]:
    """The current Flask app's ``db.session`` (and SeedGuard's ``scoped_sessions``),
    when ``engine`` is one of that app's Flask-SQLAlchemy engines."""
    from seedguard.flaskapp import app_sessions as found

    return found(engine)
