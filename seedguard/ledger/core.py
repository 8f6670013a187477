"""``Ledger``: the public entry to one ledger table; each job is done by its owner.

:class:`~seedguard.ledger.tables.LedgerTables` defines the tables,
:class:`~seedguard.ledger.reads.LedgerReader` reads them (and keeps the fast
path's caches), :class:`~seedguard.ledger.recorder.Recorder` writes and
checks each write, :class:`~seedguard.ledger.upgrade.LedgerUpgrade` creates
or upgrades the schema. ``Ledger`` keeps the methods its callers use and
hands each to its owner.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, overload

from seedguard.ledger.reads import LedgerReader
from seedguard.ledger.recorder import Recorder
from seedguard.ledger.tables import LedgerTables
from seedguard.ledger.upgrade import LedgerUpgrade

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from seedguard.ledger.rows import (
        Comparison,
        LedgerRow,
        LedgerState,
        LedgerStatus,
        PlanState,
    )


NAMED_LEDGERS = 64
"""How many ledgers :meth:`Ledger.named` keeps (an application has one, or one per bind)."""


class Ledger:
    """The ledger table ``schema.name`` and the statements that touch it.

    :param name: the ledger table's name (its version table is ``<name>_version``).
    :param schema: the schema (MySQL/MariaDB: database) holding both; None:
        the connection's default.
    """

    @staticmethod
    @functools.lru_cache(maxsize=NAMED_LEDGERS)
    def named(name: str, schema: str | None = None) -> Ledger:
        """The shared Ledger for ``schema.name``: one Table, so SQLAlchemy's
        statement cache is hit on every start-up after the first.

        The most recently used :data:`NAMED_LEDGERS` are kept: a fleet of
        1,000 schemas asks for 1,000 ledgers once each, and keeping every
        one (its tables, its reads' caches) grew a run's memory with the fleet.
        """
        return Ledger(name, schema)

    def __init__(self, name: str, schema: str | None = None) -> None:
        self.tables = LedgerTables(name, schema)
        self.reader = LedgerReader(self.tables)
        self.recorder = Recorder(self.tables)
        self.upgrade = LedgerUpgrade(self.tables, self.reader)

    @property
    def name(self) -> str:
        return self.tables.name

    @property
    def schema(self) -> str | None:
        return self.tables.schema

    @property
    def qualified_name(self) -> str:
        return self.tables.qualified_name

    @property
    def table(self) -> sa.Table:
        """The ledger table at ``HEAD_REVISION``."""
        return self.tables.table

    @property
    def version_table(self) -> sa.Table:
        """The table holding the ledger's revision (its own alembic version table)."""
        return self.tables.version_table

    # -- reading (LedgerReader) ----------------------------------------------

    @overload
    def read(self, conn: Connection, *, full: Literal[True] = ...) -> LedgerState | None: ...
    @overload
    def read(self, conn: Connection, *, full: Literal[False]) -> PlanState | None: ...

    def read(self, conn: Connection, *, full: bool = True) -> LedgerState | PlanState | None:
        """See :meth:`LedgerReader.read`."""
        return self.reader.read(conn) if full else self.reader.read(conn, full=False)

    def read_any(self, conn: Connection) -> tuple[LedgerState | None, str | None]:
        """See :meth:`LedgerReader.read_any`."""
        return self.reader.read_any(conn)

    def read_against(self, conn: Connection,
                     expected: Sequence[tuple[str, int, str]]) -> Comparison | None:
        """See :meth:`LedgerReader.read_against`."""
        return self.reader.read_against(conn, expected)

    def read_current(self, conn: Connection) -> LedgerState:
        """See :meth:`LedgerReader.read_current`."""
        return self.reader.read_current(conn)

    def row(self, conn: Connection, name: str, version: int) -> LedgerRow | None:
        """See :meth:`LedgerReader.row`."""
        return self.reader.row(conn, name, version)

    def revision(self, conn: Connection) -> str | None:
        """See :meth:`LedgerReader.revision`."""
        return self.reader.revision(conn)

    # -- schema (LedgerUpgrade) ----------------------------------------------

    def ensure(self, conn: Connection, *, commit: bool = True) -> None:
        """See :meth:`LedgerUpgrade.ensure`."""
        self.upgrade.ensure(conn, commit=commit)

    # -- writing (Recorder) --------------------------------------------------

    def insert(self, conn: Connection, name: str, version: int, checksum: str | None,
               *, status: LedgerStatus = "applied", description: str | None = None) -> None:
        """See :meth:`Recorder.insert`."""
        self.recorder.insert(conn, name, version, checksum, status=status,
                             description=description)

    def claim(self, conn: Connection, name: str, version: int, checksum: str, *,
              replaces: LedgerRow | None = None, description: str | None = None) -> bool:
        """See :meth:`Recorder.claim`."""
        return self.recorder.claim(conn, name, version, checksum, replaces=replaces,
                                   description=description)

    def finish(self, conn: Connection, name: str, version: int, *, checksum: str | None,
               duration_ms: int, status: LedgerStatus = "applied",
               was: LedgerStatus = "running") -> None:
        """See :meth:`Recorder.finish`."""
        self.recorder.finish(conn, name, version, checksum=checksum, duration_ms=duration_ms,
                             status=status, was=was)

    def delete(self, conn: Connection, name: str, version: int | None = None) -> int:
        """See :meth:`Recorder.delete`."""
        return self.recorder.delete(conn, name, version)
