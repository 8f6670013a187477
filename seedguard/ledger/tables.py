"""The ledger's tables at the newest revision, their names, and the revisions known.

The ledger's schema belongs to the alembic revisions in ``migrations/``
(:mod:`seedguard.ledger.upgrade` runs them); :data:`HEAD_REVISION` and
:attr:`LedgerTables.table` describe the newest one.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import sqlalchemy as sa

from seedguard.errors import SeedguardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

HEAD_REVISION = "sg0005"
"""The newest revision in ``migrations/versions``; raise it with each new revision."""

ADDED_AFTER_SG0001 = frozenset({"description", "superseded"})
"""Ledger columns added by revisions after sg0001 (an interrupted sg0001 lacks them)."""

KNOWN_REVISIONS = frozenset({"sg0001", "sg0002", "sg0003", "sg0004", "sg0005"})
"""Every revision this seedguard knows; a ledger at any other one is from a newer release."""


class LedgerTables:
    """The ledger table ``schema.name`` and its version table, built when first needed.

    The lock-free look at start-up only needs their quoted names, and building
    the two Tables was a twentieth of a fresh process's first apply()
    (bench/targets.py).
    """

    def __init__(self, name: str, schema: str | None = None) -> None:
        self.name = name
        self.schema = schema
        self.qualified_name = f"{schema}.{name}" if schema else name

    @property
    def table(self) -> sa.Table:
        """The ledger table at ``HEAD_REVISION``."""
        return self._tables[0]

    @property
    def version_table(self) -> sa.Table:
        """The table holding the ledger's revision (its own alembic version table)."""
        return self._tables[1]

    @functools.cached_property
    def _tables(self) -> tuple[sa.Table, sa.Table]:
        # A MetaData of its own at each build: cached_property takes no lock
        # (Python 3.12 dropped it), and two threads that race here must both
        # get valid tables, where defining a table twice in one MetaData raises.
        name = self.name
        metadata = sa.MetaData()
        table = sa.Table(
            name,
            metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("checksum", sa.String(80)),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("applied_at", sa.DateTime, nullable=False),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("applied_by", sa.String(255)),
            # sg0002: the unit's description, and an index for `history`.
            sa.Column("description", sa.Text),
            # sg0003: the checksums a re-applied row replaced (never go back to them).
            sa.Column("superseded", sa.Text),
            sa.Index(f"ix_{name}_applied_at"[:63], "applied_at"),
            schema=self.schema,
        )
        version_table = sa.Table(
            f"{name}_version",
            metadata,
            sa.Column("version_num", sa.String(32), primary_key=True),
            schema=self.schema,
        )
        return table, version_table

    def quoted(self, conn: Connection) -> tuple[str, str]:
        """The ledger's and its version table's names as ``conn``'s SQL spells them."""
        preparer = conn.dialect.identifier_preparer
        prefix = f"{preparer.quote_schema(self.schema)}." if self.schema else ""
        return (f"{prefix}{preparer.quote(self.name)}",
                f"{prefix}{preparer.quote(self.name + '_version')}")

    def at_head(self, revision: str) -> bool:
        """Whether the ledger is at HEAD_REVISION; False if behind, raises if it is newer."""
        if revision == HEAD_REVISION:
            return True
        if revision not in KNOWN_REVISIONS:
            raise newer_ledger(self.qualified_name, revision)
        return False


def newer_ledger(qualified_name: str, revision: str) -> SeedguardError:
    """The refusal of an older seedguard to touch a ledger made by a newer one."""
    return SeedguardError(
        f"ledger {qualified_name} is at schema revision {revision!r}, made by a newer "
        f"seedguard (this one knows up to {HEAD_REVISION!r}) and will not be written to; "
        "upgrade seedguard (pip install -U seedguard) to use it"
    )
