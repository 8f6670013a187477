"""apply() on each database: exactly once, atomic units, versions, drift, selection."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, effect, unit

import seedguard
from seedguard import DriftError, SeedFailed
from seedguard.unit import SeedUnit


@pytest.fixture
def fx(db: TestDatabase) -> TestDatabase:
    db.create_effects_table()
    return db


def test_apply_twice_applies_once(fx: TestDatabase) -> None:
    units = [unit("roles"), unit("users", after=["roles"])]
    first = seedguard.apply(fx.url, seeds=units)
    second = seedguard.apply(fx.url, seeds=units)

    assert [u.name for u in first.applied] == ["roles", "users"]
    assert second.applied == []
    assert [u.name for u in second.skipped] == ["roles", "users"]
    assert fx.effects() == ["roles", "users"]
    assert fx.ledger() == [("roles", 1), ("users", 1)]


def test_engine_bind_is_used_and_left_open(fx: TestDatabase) -> None:
    engine = fx.engine()
    seedguard.apply(engine, seeds=[unit("roles")])
    with engine.connect() as conn:  # the caller's engine still works
        assert conn.execute(sa.text("SELECT COUNT(*) FROM effects")).scalar() == 1


def test_ledger_records_checksum_time_and_applier(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("roles")])
    row = fx.execute("SELECT checksum, status, applied_at, duration_ms, applied_by "
                     "FROM seedguard_ledger")[0]
    assert row.checksum.startswith("ast1:")
    assert row.status == "applied"
    assert row.applied_at is not None
    assert row.duration_ms >= 0
    assert ":" in row.applied_by  # host:pid


def failing_after_commit(session: Any) -> None:
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('broken', 'committed')"))
    session.commit()  # must only release a savepoint, not commit the unit's transaction
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('broken', 'after')"))
    raise RuntimeError("boom")


def test_failing_unit_rolls_back_and_rerun_resumes(fx: TestDatabase) -> None:
    units = [unit("first"), unit("broken", fn=failing_after_commit), unit("last")]
    with pytest.raises(SeedFailed) as info:
        seedguard.apply(fx.url, seeds=units)

    assert info.value.unit.name == "broken"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "broken" in str(info.value) and "boom" in str(info.value)
    assert fx.effects() == ["first"]  # broken's writes (even the committed one) are gone
    assert fx.ledger() == [("first", 1)]  # last never ran

    fixed = [units[0], unit("broken"), units[2]]
    result = seedguard.apply(fx.url, seeds=fixed)
    assert [u.name for u in result.applied] == ["broken", "last"]
    assert sorted(fx.effects()) == ["broken", "first", "last"]


def test_unit_commit_does_not_commit_outer_transaction(fx: TestDatabase) -> None:
    def commits_twice(session: Any) -> None:
        for value in ("a", "b"):
            session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('c', :v)"),
                            {"v": value})
            session.commit()

    seedguard.apply(fx.url, seeds=[unit("c", fn=commits_twice)])
    assert fx.effects("c") == ["a", "b"]


def test_orm_objects_added_without_commit_are_flushed(fx: TestDatabase) -> None:
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        pass

    class Effect(Base):
        __tablename__ = "effects"
        unit = sa.Column(sa.String(255), primary_key=True)
        value = sa.Column(sa.String(255))

    def orm(session: Any) -> None:
        session.add(Effect(unit="orm", value="added"))

    seedguard.apply(fx.url, seeds=[unit("orm", fn=orm)])
    assert fx.effects("orm") == ["added"]


def test_version_bump_reapplies_and_keeps_history(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("roles")])
    same = seedguard.apply(fx.url, seeds=[unit("roles")])
    bumped = seedguard.apply(fx.url, seeds=[unit("roles", version=2)])

    assert same.applied == []
    assert [(u.name, u.version) for u in bumped.applied] == [("roles", 2)]
    assert fx.ledger() == [("roles", 1), ("roles", 2)]
    assert fx.effects() == ["roles", "roles"]


def test_ledger_version_above_code_is_reported_not_applied(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("roles", version=3)])
    result = seedguard.apply(fx.url, seeds=[unit("roles", version=2)])
    assert result.applied == [] and [u.name for u in result.ahead] == ["roles"]
    assert fx.ledger() == [("roles", 3)]


# Two versions of one unit body that differ only in comments and formatting,
# and one that differs in logic: module-level so their source can be read.
def body_v1(session: Any) -> None:
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('d', 'one')"))


def body_v1_reformatted(session: Any) -> None:
    """A docstring does not count."""
    # neither does a comment
    session.execute(
        sa.text("INSERT INTO effects (unit, value) VALUES ('d', 'one')")  # nor this
    )


def body_v2(session: Any) -> None:
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('d', 'two')"))


def test_comment_only_edit_is_not_drift(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("d", fn=body_v1)])
    result = seedguard.apply(fx.url, seeds=[unit("d", fn=body_v1_reformatted)])
    assert result.drifted == [] and result.applied == []


def test_logic_edit_is_reported_as_drift(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("d", fn=body_v1)])
    result = seedguard.apply(fx.url, seeds=[unit("d", fn=body_v2)])
    assert [d.name for d in result.drifted] == ["d"]
    assert result.applied == []
    assert fx.effects("d") == ["one"]
    with pytest.raises(DriftError, match="seedguard stamp d"):
        seedguard.apply(fx.url, seeds=[unit("d", fn=body_v2)], strict=True)


def test_on_change_rerun_reapplies(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("d", fn=body_v1, on_change="rerun")])
    result = seedguard.apply(fx.url, seeds=[unit("d", fn=body_v2, on_change="rerun")])
    again = seedguard.apply(fx.url, seeds=[unit("d", fn=body_v2, on_change="rerun")])
    assert [u.name for u in result.applied] == ["d"]
    assert again.applied == [] and again.drifted == []
    assert fx.effects("d") == ["one", "two"]
    assert fx.ledger() == [("d", 1)]


def test_on_change_error_refuses_before_running_anything(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("d", fn=body_v1, on_change="error")])
    with pytest.raises(DriftError):
        seedguard.apply(fx.url, seeds=[unit("d", fn=body_v2, on_change="error"), unit("new")])
    assert fx.effects() == ["d"]


def test_dry_run_writes_nothing_not_even_the_ledger(fx: TestDatabase) -> None:
    result = seedguard.apply(fx.url, seeds=[unit("a"), unit("b", after=["a"])], dry_run=True)
    assert [u.name for u in result.pending] == ["a", "b"]
    assert result.applied == []
    assert fx.tables() == {"effects"}


def test_target_applies_unit_and_its_dependencies_only(fx: TestDatabase) -> None:
    units = [unit("a"), unit("b", after=["a"]), unit("c"), unit("d", after=["b"])]
    result = seedguard.apply(fx.url, seeds=units, target="b")
    assert [u.name for u in result.applied] == ["a", "b"]
    assert fx.effects() == ["a", "b"]


def test_contexts_select_units(fx: TestDatabase) -> None:
    units = [unit("always"), unit("dev-only", contexts=frozenset({"dev"})),
             unit("test-or-dev", contexts=frozenset({"dev", "test"}))]
    prod = seedguard.apply(fx.url, seeds=units)
    assert [u.name for u in prod.applied] == ["always"]
    test = seedguard.apply(fx.url, seeds=units, contexts=["test"])
    assert [u.name for u in test.applied] == ["test-or-dev"]


def test_contexts_from_environment(fx: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDGUARD_CONTEXTS", "qa, dev")
    units = [unit("dev-only", contexts=frozenset({"dev"}))]
    assert [u.name for u in seedguard.apply(fx.url, seeds=units).applied] == ["dev-only"]


def test_url_from_environment(fx: TestDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDGUARD_URL", fx.url)
    assert [u.name for u in seedguard.apply(seeds=[unit("env")]).applied] == ["env"]


def test_decorated_units_in_a_seeds_package(fx: TestDatabase, tmp_path: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from _support import write_module

    package = f"seeds_{tmp_path.name.replace('-', '_')}"  # fresh per test: not yet imported
    write_module(tmp_path, f"{package}.b_users", """
        import sqlalchemy as sa, seedguard
        @seedguard.seed("users", after=["roles"])
        def users(session):
            session.execute(sa.text("INSERT INTO effects (unit) VALUES ('users')"))
        """)
    write_module(tmp_path, f"{package}.a_roles", """
        import sqlalchemy as sa, seedguard
        @seedguard.seed("roles")
        def roles(session):
            session.execute(sa.text("INSERT INTO effects (unit) VALUES ('roles')"))
        """)
    write_module(tmp_path, f"other_{package}", """
        import seedguard
        @seedguard.seed("unrelated")
        def unrelated(session):
            raise AssertionError("not selected")
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__(f"other_{package}")  # declared, but outside the seeds path

    result = seedguard.apply(fx.url, seeds=package)
    assert [u.name for u in result.applied] == ["roles", "users"]
    assert isinstance(result.applied[0].unit, SeedUnit)


def test_unit_work_and_ledger_row_share_one_transaction(fx: TestDatabase) -> None:
    seen: list[Any] = []

    def probe(session: Any) -> None:
        # The ledger row is inserted, uncommitted, before the work: only the
        # unit's own transaction can see it.
        seen.extend(session.execute(sa.text(
            "SELECT name, version FROM seedguard_ledger WHERE name = 'probe'")).all())
        effect("probe")(session)

    seedguard.apply(fx.url, seeds=[unit("probe", fn=probe)])
    assert [tuple(row) for row in seen] == [("probe", 1)]
