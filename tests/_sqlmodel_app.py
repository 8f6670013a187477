"""A small FastAPI + SQLModel app shaped like fastapi/full-stack-fastapi-template, for the tests.

``write_app(folder, package)`` writes the package ``package`` into ``folder``:

- ``core/db.py``: the app's module-level ``engine`` from ``DATABASE_URL`` (with the
  template's ``postgres://`` fix-up), a connect listener that logs each new
  connection to ``CONNECT_LOG`` (so a test sees the app's engine was used);
- ``core/adb.py``: the same as an ``AsyncEngine`` (``ASYNC_DATABASE_URL``);
- ``models.py``: ``User`` (unique e-mail), on a registry of its own so that many
  copies can live in one test process;
- ``crud.py``: the template's helpers, which take a ``sqlmodel.Session`` and use
  ``session.exec(select(...))`` and ``session.commit()``;
- ``seeds.py``: the tables (non-transactional: DDL) and the first superuser through
  the helpers, the unit's session annotated ``sqlmodel.Session`` under
  ``from __future__ import annotations``; ``SG_FAIL=1`` makes it fail after the
  helper committed; ``SG_ESCAPE=1`` makes it write through the module-level
  engine instead, as the template's ``initial_data.init()`` does;
- ``aseeds.py``: the same superuser from an ``async def`` unit annotated with
  SQLModel's ``AsyncSession``;
- ``main.py``: the FastAPI app; its lifespan seeds with ``seedguard.apply_async``
  on the app's engine, ``GET /`` lists the users through the helpers.

Relative imports throughout, so the package can take any name.
"""

from __future__ import annotations

from pathlib import Path

from _support import write_module

FILES = {
    "__init__": "",
    "core.__init__": "",
    "core.db": '''
        from __future__ import annotations

        import os

        from sqlalchemy import event
        from sqlmodel import create_engine


        def database_url() -> str:
            url = os.environ["DATABASE_URL"]
            # As apps on hosts that hand out postgres:// URLs do: SQLAlchemy
            # does not know that scheme.
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            return url


        engine = create_engine(database_url(), pool_pre_ping=True)


        @event.listens_for(engine, "connect")
        def _log_connect(dbapi_connection, record):
            log = os.environ.get("CONNECT_LOG")
            if log:
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"{os.getpid()}\\n")
        ''',
    "core.adb": '''
        from __future__ import annotations

        import os

        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
        ''',
    "models": '''
        from __future__ import annotations

        from sqlalchemy.orm import registry
        from sqlmodel import Field, SQLModel


        class Base(SQLModel, registry=registry()):
            pass


        class User(Base, table=True):
            id: int | None = Field(default=None, primary_key=True)
            email: str = Field(unique=True, max_length=255)
            full_name: str | None = Field(default=None, max_length=255)
            is_superuser: bool = False
        ''',
    "crud": '''
        from __future__ import annotations

        from sqlmodel import Session, select

        from .models import User


        def create_user(*, session: Session, email: str, is_superuser: bool = False) -> User:
            user = User(email=email, is_superuser=is_superuser)
            session.add(user)
            session.commit()
            session.refresh(user)
            return user


        def get_user_by_email(*, session: Session, email: str) -> User | None:
            return session.exec(select(User).where(User.email == email)).first()


        def list_emails(*, session: Session) -> list[str]:
            return [user.email for user in session.exec(select(User).order_by(User.id))]
        ''',
    "seeds": '''
        from __future__ import annotations

        import os

        from sqlmodel import Session

        import seedguard

        from . import crud
        from .core.db import engine
        from .models import Base, User

        FIRST_SUPERUSER = "admin@example.com"


        # DDL commits implicitly on MySQL/MariaDB: a unit of its own, non-transactional.
        @seedguard.seed("tables", transactional=False)
        def tables(session: Session) -> None:
            Base.metadata.create_all(session.connection())


        @seedguard.seed("first-superuser", after=["tables"])
        def first_superuser(session: Session) -> None:
            log = os.environ.get("SEED_RUN_LOG")
            if log:
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"{os.getpid()}\\n")
            if os.environ.get("SG_ESCAPE") == "1":
                # The template's initial_data.init(): a session of its own on the
                # app's module-level engine, committed there.
                with Session(engine) as own:
                    crud.create_user(session=own, email=FIRST_SUPERUSER, is_superuser=True)
                raise RuntimeError("failed after writing through the module-level engine")
            user = crud.get_user_by_email(session=session, email=FIRST_SUPERUSER)
            if user is None:
                crud.create_user(session=session, email=FIRST_SUPERUSER, is_superuser=True)
            if os.environ.get("SG_FAIL") == "1":
                raise RuntimeError("failed on purpose after the helper committed")
        ''',
    "aseeds": '''
        from __future__ import annotations

        from sqlmodel import Session, select
        from sqlmodel.ext.asyncio.session import AsyncSession

        import seedguard

        from .models import Base, User


        @seedguard.seed("tables", transactional=False)
        def tables(session: Session) -> None:
            Base.metadata.create_all(session.connection())


        @seedguard.seed("first-superuser", after=["tables"])
        async def first_superuser(session: AsyncSession) -> None:
            found = (await session.exec(select(User).where(User.email == "admin@example.com"))
                     ).first()
            if found is None:
                session.add(User(email="admin@example.com", is_superuser=True))
                await session.commit()
            assert (await session.exec(select(User))).one().is_superuser
        ''',
    "main": '''
        from __future__ import annotations

        import contextlib
        import os
        from collections.abc import AsyncIterator
        from typing import Any

        from fastapi import FastAPI
        from sqlmodel import Session

        import seedguard

        from . import crud
        from .core.db import engine


        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            # Every worker runs this; the sync engine's work goes to a thread.
            await seedguard.apply_async(engine, seeds=__package__ + ".seeds", lock_timeout=60)
            yield


        app = FastAPI(lifespan=lifespan)


        @app.get("/")
        def index() -> dict[str, Any]:
            with Session(engine) as session:
                return {"pid": os.getpid(), "users": crud.list_emails(session=session)}
        ''',
}


def write_app(folder: Path, package: str) -> Path:
    """Write the app as ``folder/package``; returns the package's folder."""
    for name, source in FILES.items():
        write_module(folder, f"{package}.{name}", source)
    return folder / package
