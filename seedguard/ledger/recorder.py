"""Every write to the ledger, each checked by the rows it matched.

Like alembic's ``HeadMaintainer`` (``runtime/migration.py``), which raises
when an update of the version table does not match exactly one row: each
write here states how many rows it may match, and a write that matched
otherwise raises instead of leaving a ledger that says something else than
what happened. Writes run in the caller's transaction, the one that holds
the unit's work.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import TYPE_CHECKING, Any

from seedguard.errors import SeedguardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, CursorResult

    from seedguard.ledger.rows import LedgerRow, LedgerStatus
    from seedguard.ledger.tables import LedgerTables


class Recorder:
    """Inserts, claims, finishes and deletes the ledger's rows."""

    def __init__(self, tables: LedgerTables) -> None:
        self.tables = tables

    def insert(self, conn: Connection, name: str, version: int, checksum: str | None,
               *, status: LedgerStatus = "applied", description: str | None = None) -> None:
        """Record ``(name, version)``; the primary key refuses a second applier.

        The one write not counted: an INSERT of one row inserts it or raises,
        and not every driver reports its rowcount (psycopg 3 through
        SQLAlchemy 2 gives -1 for it).
        """
        conn.execute(self.tables.table.insert().values(
            name=name, version=version, checksum=checksum, status=status,
            applied_at=utcnow(), duration_ms=None, applied_by=applied_by(),
            description=description,
        ))

    def claim(self, conn: Connection, name: str, version: int, checksum: str, *,
              replaces: LedgerRow | None = None, description: str | None = None) -> bool:
        """Mark ``(name, version)`` as running in ``conn``'s transaction, before any work.

        A new unit's row is inserted (the primary key refuses a second
        applier); a re-applied unit's row is switched to running only while
        it still holds ``replaces``' checksum, which also row-locks it until
        this transaction ends. False: the statement matched nothing, so
        another applier changed the row since it was read; the caller
        re-reads it to tell a lost race from anything else. An IntegrityError
        from the insert propagates for the same reason.
        """
        if replaces is None:
            self.insert(conn, name, version, checksum, status="running",
                        description=description)
            return True
        table = self.tables.table
        superseded = " ".join(filter(None, [replaces.superseded, replaces.checksum]))
        result = conn.execute(
            table.update()
            .where(table.c.name == name, table.c.version == version,
                   table.c.status == "applied", _same(table.c.checksum, replaces.checksum))
            .values(status="running", superseded=superseded or None,
                    applied_at=utcnow(), applied_by=applied_by(), description=description)
        )
        return self._matched(result, name, version, low=0, high=1) == 1

    def finish(self, conn: Connection, name: str, version: int, *, checksum: str | None,
               duration_ms: int, status: LedgerStatus = "applied",
               was: LedgerStatus = "running") -> None:
        """Set the outcome of a row whose status is ``was``; exactly one row must match.

        Only a running row is finished: a row some other applier completed
        meanwhile is never overwritten.
        """
        table = self.tables.table
        result = conn.execute(
            table.update()
            .where(table.c.name == name, table.c.version == version,
                   table.c.status == was)
            .values(checksum=checksum, status=status, duration_ms=duration_ms,
                    applied_at=utcnow(), applied_by=applied_by())
        )
        self._matched(result, name, version, low=1, high=1)

    def delete(self, conn: Connection, name: str, version: int | None = None) -> int:
        """Remove the rows of ``name`` (one version, or all); returns how many."""
        table = self.tables.table
        query = table.delete().where(table.c.name == name)
        if version is not None:
            query = query.where(table.c.version == version)
        result = conn.execute(query)
        if version is None:
            return result.rowcount
        return self._matched(result, name, version, low=0, high=1, verb="delete")

    def unrecord(self, conn: Connection, row: LedgerRow) -> tuple[str, str | None]:
        """Undo the application ``row`` records (a downgrade); exactly one row must match.

        A row that replaced earlier data goes back to the checksum it
        superseded (``("reverted", checksum)``); a first application is
        removed (``("removed", None)``). Either way the unit is pending again.
        """
        table = self.tables.table
        match = (table.c.name == row.name, table.c.version == row.version,
                 table.c.status == "applied", _same(table.c.checksum, row.checksum))
        earlier = (row.superseded or "").split()
        if earlier:
            previous = earlier.pop()
            result = conn.execute(table.update().where(*match).values(
                checksum=previous, superseded=" ".join(earlier) or None))
            self._matched(result, row.name, row.version, low=1, high=1)
            return "reverted", previous
        result = conn.execute(table.delete().where(*match))
        self._matched(result, row.name, row.version, low=1, high=1, verb="delete")
        return "removed", None

    def _matched(self, result: CursorResult[Any], name: str, version: int, *,
                 low: int, high: int, verb: str = "update") -> int:
        """The rows ``result`` matched; raises unless ``low`` <= matched <= ``high`` (<= 1)."""
        count = result.rowcount
        if not low <= count <= high:
            expected = "one row" if low == high else "at most one row"
            raise SeedguardError(
                f"ledger {self.tables.qualified_name}: expected to {verb} {expected} for "
                f"{name!r} v{version}, matched {count}"
            )
        return count


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def utcnow() -> dt.datetime:
    """Now in UTC, naive: every backend stores it as-is, and reads add UTC back."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def applied_by() -> str:
    """Who records a row: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]
