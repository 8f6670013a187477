"""The demo's seed units: the tables, the roles, then an admin user that needs them.

(A real app creates its tables with alembic; ``create_all`` in a unit keeps
the demo to two files, and on SQLite its DDL commits with the ledger row.)
"""

from __future__ import annotations

from models import Base, Role, User
from sqlalchemy import select
from sqlalchemy.orm import Session

import seedguard


@seedguard.seed("schema")
def schema(session: Session) -> None:
    Base.metadata.create_all(session.connection())


@seedguard.seed("roles", version=1, after=["schema"])
def roles(session: Session) -> None:
    """The roles every install needs."""
    session.add_all([Role(name="admin"), Role(name="user")])


@seedguard.seed("admin-user", version=1, after=["roles"])
def admin_user(session: Session) -> None:
    admin = session.scalars(select(Role).where(Role.name == "admin")).one()
    session.add(User(email="admin@example.com", role_id=admin.id))
