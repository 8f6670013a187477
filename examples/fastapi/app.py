"""A FastAPI app that seeds from its lifespan with ``await seedguard.apply_async()``.

    uvicorn app:app --reload     # seeds once; a file change restarts the app: nothing re-runs
    uvicorn app:app --workers 4  # four workers run the lifespan at once: seeded once

``DATABASE_URL`` picks the database (default: ``app.db`` beside this file through
aiosqlite; ``postgresql+asyncpg://...`` and ``mysql+aiomysql://...`` work the same).
The seed units live in ``seeds.py``; ``SEEDGUARD=off`` runs them directly, without
seedguard, to show the bug: every worker and every restart seeds again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from seeds import Role, seed_without_seedguard
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import seedguard

HERE = Path(__file__).resolve().parent

engine = create_async_engine(os.environ.get("DATABASE_URL",
                                            f"sqlite+aiosqlite:///{HERE / 'app.db'}"))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Every worker, and every restart under --reload, runs this: seedguard applies
    # each unit once across all of them and returns at once when nothing is pending.
    # While one worker applies, the others wait without blocking their event loop.
    if os.environ.get("SEEDGUARD") == "off":
        await seed_without_seedguard(engine)
    else:
        await seedguard.apply_async(engine, seeds="seeds", lock_timeout=60)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index() -> dict[str, Any]:
    async with AsyncSession(engine) as session:
        names = (await session.scalars(sa.select(Role.name).order_by(Role.id))).all()
    return {"pid": os.getpid(), "roles": list(names)}
