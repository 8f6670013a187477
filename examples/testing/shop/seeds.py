"""The seeds: the same ones for development, CI, production and the test suite."""

from __future__ import annotations

import seedguard
from shop.models import Base, Role


# In a real project your migrations make the schema (`seedguard upgrade --schema`
# runs them under the same locks); here one unit does, so the example stands alone.
# Non-transactional, because MySQL/MariaDB commit DDL implicitly.
@seedguard.seed("schema", transactional=False)
def schema(session):
    Base.metadata.create_all(session.connection())


@seedguard.seed("roles", after=["schema"])
def roles(session):
    session.add_all([Role(name="admin"), Role(name="user")])
