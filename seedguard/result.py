"""What an apply run reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seedguard.unit import SeedUnit


@dataclass(frozen=True)
class Drift:
    """An applied unit whose code or data no longer matches the recorded checksum."""

    name: str
    version: int
    recorded: str | None
    current: str
    unit: SeedUnit

    def message(self) -> str:
        return (
            f"unit {self.name!r} v{self.version} was applied with a different checksum; "
            f"raise its version to re-apply it, or run `seedguard stamp {self.name}` to "
            "accept the change"
        )


@dataclass(frozen=True)
class Waiting:
    """A unit not applied yet because the user's alembic history lacks a revision.

    ``revision`` is the revision it waits for; ``via`` names the unit (listed
    in its ``after``) that declares it, when this unit only waits behind it.
    """

    name: str
    version: int
    revision: str
    unit: SeedUnit
    via: str | None = None

    def message(self) -> str:
        why = f" (behind unit {self.via!r})" if self.via else ""
        return (
            f"unit {self.name!r} v{self.version} waits for alembic revision "
            f"{self.revision!r}{why}; run `alembic upgrade` (or `seedguard upgrade --schema`) "
            "and apply again"
        )


@dataclass(frozen=True)
class Applied:
    """A unit this call applied, with how long its transaction took."""

    name: str
    version: int
    duration_ms: int
    unit: SeedUnit = field(repr=False)

    def __repr__(self) -> str:
        return f"Applied({self.name!r}, version={self.version}, duration_ms={self.duration_ms})"


@dataclass
class ApplyResult:
    """The outcome of :func:`seedguard.apply`.

    ``applied``: units this call applied, in order. ``skipped``: selected units
    already applied. ``pending``: units still to apply (what a ``dry_run``
    would do). ``drifted``: applied units whose checksum changed. ``ahead``:
    units whose ledger holds a version above the code's (reported, not
    applied). ``waiting``: units whose ``requires_revision`` is not applied
    yet in the user's alembic history (with ``.revision``), and the units
    after them. ``migrated``: the user's alembic revisions that
    ``schema=True`` applied, oldest first. Each unit item has ``.name`` and
    ``.version``.
    """

    applied: list[Applied] = field(default_factory=list)
    skipped: list[SeedUnit] = field(default_factory=list)
    pending: list[SeedUnit] = field(default_factory=list)
    drifted: list[Drift] = field(default_factory=list)
    ahead: list[SeedUnit] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    dry_run: bool = False
    # dry_run only: unit name -> what its preview hook reported (data seeds:
    # an UpsertResult with inserted/updated/unchanged/deleted counts).
    previews: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether this call wrote anything."""
        return bool(self.applied or self.migrated)

    def __repr__(self) -> str:
        # "name vN" per unit, and only the lists that hold something: the
        # default dataclass repr printed every unit's function and hooks.
        parts = []
        for label in ("applied", "skipped", "pending", "drifted", "ahead", "waiting"):
            items = getattr(self, label)
            if items:
                parts.append(f"{label}={[f'{i.name} v{i.version}' for i in items]!r}")
        if self.migrated:
            parts.append(f"migrated={self.migrated!r}")
        if self.dry_run:
            parts.append("dry_run=True")
        return f"ApplyResult({', '.join(parts)})"
