"""``await seedguard.apply_each_async()``: a fleet of whole databases from async code.

Each target is one ``apply_async`` (its own ledger, locks and failure) on the
running loop; a failing target never stops another; a rerun applies nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, async_url

import seedguard
import seedguard.fleet
from seedguard import ConfigError, SeedFailed


def test_apply_each_async_applies_each_target_once_and_isolates_failures(
        db: TestDatabase, tmp_path: Path) -> None:
    db.create_effects_table()
    other = tmp_path / "other"
    other.mkdir()
    second = TestDatabase("sqlite", f"sqlite:///{other / 'b.db'}", other)
    second.create_effects_table()
    broken = tmp_path / "broken"
    broken.mkdir()
    third = TestDatabase("sqlite", f"sqlite:///{broken / 'c.db'}", broken)  # no effects table

    @seedguard.seed("roles")
    async def roles(session: Any) -> None:
        await session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))

    targets = [async_url(db), async_url(second), async_url(third)]
    seen: list[str] = []
    result = asyncio.run(seedguard.apply_each_async(
        targets, on_target=lambda label, outcome: seen.append(label)))
    assert not result.ok
    assert list(result.results) == [seedguard.fleet.target_label(t) for t in targets[:2]]
    assert [u.name for r in result.results.values() for u in r.applied] == ["roles", "roles"]
    [failure] = result.failed.values()
    assert isinstance(failure, SeedFailed)
    assert sorted(seen) == sorted(seedguard.fleet.target_label(t) for t in targets)
    assert db.effects("roles") == ["x"] and second.effects("roles") == ["x"]

    again = asyncio.run(seedguard.apply_each_async(targets[:2]))
    assert again.ok and all(not r.applied for r in again.results.values())
    assert db.ledger() == [("roles", 1)] and second.ledger() == [("roles", 1)]


def test_apply_each_async_refuses_schemas_and_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apply_each"):
        asyncio.run(seedguard.apply_each_async(
            [seedguard.Schema("postgresql+asyncpg://u@h/d", "tenant_1")]))
    with pytest.raises(ConfigError, match="lock_path"):
        asyncio.run(seedguard.apply_each_async([f"sqlite+aiosqlite:///{tmp_path}/x.db"],
                                               lock_path=str(tmp_path / "l")))
