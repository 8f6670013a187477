"""The app's seed units: one ``def`` (the tables) and one ``async def`` (the roles).

Both kinds run on the async path: an ``async def`` unit receives an ``AsyncSession``
bound to the unit's own transaction, a plain ``def`` unit a ``Session`` on the same
connection.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import seedguard


class Base(DeclarativeBase):
    pass


class Role(Base):
    __tablename__ = "role"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)


# create_all() in every worker at once races; as a unit it runs once, under
# seedguard's locks. DDL commits implicitly on MySQL/MariaDB, so it cannot share
# a transaction: transactional=False.
@seedguard.seed("tables", transactional=False)
def tables(session: Session) -> None:
    Base.metadata.create_all(session.connection())


@seedguard.seed("roles", after=["tables"])
async def roles(session: AsyncSession) -> None:
    _note_run()
    session.add_all([Role(name="admin"), Role(name="user")])


async def seed_without_seedguard(engine: AsyncEngine) -> None:
    """The bug, for comparison: what a lifespan without seedguard does in every process."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        _note_run()
        session.add_all([Role(name="admin"), Role(name="user")])
        await session.commit()


def _note_run() -> None:
    # For the tests (and the curious): one line per time the roles seed ran.
    log = os.environ.get("SEED_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
