"""SQLModel sessions in units: a unit annotated ``sqlmodel.Session`` (or SQLModel's
``AsyncSession``) gets one bound to its transaction, so ``session.exec()`` and the app's
CRUD helpers (which commit) work unchanged; ``session_class=`` sets it for every unit.

The app is the template-shaped package of ``_sqlmodel_app``, written into tmp.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from _sqlmodel_app import write_app
from _support import TestDatabase, async_url, write_module

import seedguard
from seedguard import ConfigError, DefinitionError, SeedFailed


def _app(db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = f"app_{uuid.uuid4().hex[:8]}"
    write_app(tmp_path, package)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", db.url)
    monkeypatch.setenv("ASYNC_DATABASE_URL", async_url(db))
    return package


def _users(db: TestDatabase) -> list[tuple[str, bool]]:
    return [(row[0], bool(row[1]))
            for row in db.execute("SELECT email, is_superuser FROM user ORDER BY id"
                                  if db.kind != "postgresql" else
                                  'SELECT email, is_superuser FROM "user" ORDER BY id')]


def test_crud_helpers_run_unchanged_in_a_unit(db: TestDatabase, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    package = _app(db, tmp_path, monkeypatch)
    engine = db.engine()

    first = seedguard.apply(engine, seeds=f"{package}.seeds")

    assert [u.name for u in first.applied] == ["tables", "first-superuser"]
    assert _users(db) == [("admin@example.com", True)]
    assert db.ledger() == [("first-superuser", 1), ("tables", 1)]
    again = seedguard.apply(engine, seeds=f"{package}.seeds")
    assert again.applied == [] and _users(db) == [("admin@example.com", True)]


def test_a_unit_that_fails_after_its_helper_committed_leaves_nothing(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _app(db, tmp_path, monkeypatch)
    engine = db.engine()
    monkeypatch.setenv("SG_FAIL", "1")

    with pytest.raises(SeedFailed, match="rolled back") as failed:
        seedguard.apply(engine, seeds=f"{package}.seeds")

    assert failed.value.unit is not None and failed.value.unit.name == "first-superuser"
    # crud.create_user's session.commit() ended a SAVEPOINT, not the unit.
    assert _users(db) == []
    assert db.ledger() == [("tables", 1)]
    monkeypatch.delenv("SG_FAIL")
    retry = seedguard.apply(engine, seeds=f"{package}.seeds")
    assert [u.name for u in retry.applied] == ["first-superuser"]
    assert _users(db) == [("admin@example.com", True)]


UNANNOTATED = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("exec-without-annotation")
def unit(session):
    # Only a sqlmodel.Session has exec().
    session.exec(sa.text("INSERT INTO effects (unit, value) VALUES ('exec', :kind)"),
                 params={"kind": type(session).__module__})
'''


def test_session_class_sets_the_class_of_unannotated_units(
        db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlmodel

    db.create_effects_table()
    module = f"plain_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, module, UNANNOTATED)
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(SeedFailed, match="has no attribute 'exec'"):
        seedguard.apply(db.url, seeds=module)
    result = seedguard.apply(db.url, seeds=module, session_class=sqlmodel.Session)

    assert [u.name for u in result.applied] == ["exec-without-annotation"]
    assert db.effects("exec") == ["sqlmodel.orm.session"]


def test_an_async_sqlmodel_unit_through_apply_async(db: TestDatabase, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    package = _app(db, tmp_path, monkeypatch)

    async def main() -> list[str]:
        result = await seedguard.apply_async(async_url(db), seeds=f"{package}.aseeds")
        return [u.name for u in result.applied]

    assert asyncio.run(main()) == ["tables", "first-superuser"]
    assert _users(db) == [("admin@example.com", True)]
    assert db.ledger() == [("first-superuser", 1), ("tables", 1)]


ASYNC_DEFAULT = '''
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
import seedguard

@seedguard.seed("sync-exec")
def sync_exec(session):
    session.exec(sa.text("INSERT INTO effects (unit, value) VALUES ('sync', :kind)"),
                 params={"kind": type(session).__module__})

# Annotated with SQLAlchemy's own AsyncSession: SQLModel's is a subclass, so it is given.
@seedguard.seed("async-exec", after=["sync-exec"])
async def async_exec(session: AsyncSession):
    await session.exec(sa.text("INSERT INTO effects (unit, value) VALUES ('async', :kind)"),
                       params={"kind": type(session).__module__})
    await session.commit()
'''


def test_sqlmodels_async_session_class_covers_both_kinds_of_unit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlmodel.ext.asyncio.session import AsyncSession

    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    db.create_effects_table()
    module = f"mixed_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, module, ASYNC_DEFAULT)
    monkeypatch.syspath_prepend(str(tmp_path))

    result = asyncio.run(seedguard.apply_async(async_url(db), seeds=module,
                                               session_class=AsyncSession))

    assert [u.name for u in result.applied] == ["sync-exec", "async-exec"]
    assert db.effects("sync") == ["sqlmodel.orm.session"]
    assert db.effects("async") == ["sqlmodel.ext.asyncio.session"]


MISMATCHED = '''
from __future__ import annotations
from sqlmodel.ext.asyncio.session import AsyncSession
import seedguard

@seedguard.seed("mismatched")
def mismatched(session: AsyncSession) -> None:
    pass
'''


def test_a_plain_unit_annotated_with_an_async_session_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"mismatched_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, module, MISMATCHED)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'app.db'}"

    with pytest.raises(DefinitionError, match=r"make it `async def`.*sqlmodel\.Session"):
        seedguard.apply(url, seeds=module)
    assert TestDatabase("sqlite", url, tmp_path).ledger() == []


def test_session_class_must_be_a_session_class(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"session_class=<class 'int'>: expected a Session"):
        seedguard.apply(f"sqlite:///{tmp_path / 'app.db'}", seeds=[], session_class=int)


UNDER_TYPE_CHECKING = '''
from __future__ import annotations
from typing import TYPE_CHECKING
import sqlalchemy as sa
import seedguard

if TYPE_CHECKING:
    from sqlmodel import Session

@seedguard.seed("typing-only")
def typing_only(session: Session) -> None:
    # The name does not exist at run time: the unit gets SQLAlchemy's Session.
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('typing-only', 'x')"))
'''


def test_a_typing_only_annotation_leaves_the_default_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    db.create_effects_table()
    module = f"typing_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, module, UNDER_TYPE_CHECKING)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert [u.name for u in seedguard.apply(db.url, seeds=module).applied] == ["typing-only"]
    assert db.effects("typing-only") == ["x"]


def test_units_that_do_not_use_sqlmodel_never_import_it(tmp_path: Path) -> None:
    code = textwrap.dedent(f'''
        from __future__ import annotations
        import sys
        import sqlalchemy as sa
        from sqlalchemy.orm import Session
        import seedguard

        @seedguard.seed("plain")
        def plain(session: Session) -> None:
            session.execute(sa.text("SELECT 1"))

        result = seedguard.apply("sqlite:///{tmp_path / 'app.db'}")
        print([u.name for u in result.applied], "sqlmodel" in sys.modules)
        ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['plain'] False"


def test_the_sqlmodel_session_joins_the_units_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit's session is on the unit's own connection (not a new one of the engine)."""
    import sqlmodel

    seen: list[object] = []

    @seedguard.seed("joined")
    def joined(session: sqlmodel.Session) -> None:
        seen.append(type(session))
        seen.append(session.connection().in_nested_transaction())

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        seedguard.apply(engine, seeds=[joined])
    finally:
        engine.dispose()
    assert seen == [sqlmodel.Session, True]


ANNOTATED = '''
from __future__ import annotations
import sqlalchemy as sa
from sqlmodel import Session
import seedguard

@seedguard.seed("annotated")
def annotated(session: Session) -> None:
    session.exec(sa.text("INSERT INTO effects (unit, value) VALUES ('annotated', 'x')"))
'''


def test_a_rehearsal_gives_the_annotated_session_class(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    db.create_effects_table()
    module = f"annotated_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, module, ANNOTATED)
    monkeypatch.syspath_prepend(str(tmp_path))

    rehearsed = seedguard.plan(db.url, seeds=module)

    assert rehearsed.ok, rehearsed
    assert db.effects() == []  # rolled back
    assert [u.name for u in seedguard.apply(db.url, seeds=module, plan=rehearsed).applied] \
        == ["annotated"]
    assert db.effects("annotated") == ["x"]
