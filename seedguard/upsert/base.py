"""What a dialect's writer does, and the registry that picks one by dialect name.

The core (:mod:`seedguard.upsert.core`) decides which rows are missing or
changed; a writer puts exactly those rows into the table with the dialect's
native upsert, so a row that another transaction inserted in between is
updated rather than a unique-key error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seedguard.bydialect import ByDialect, Registry
from seedguard.errors import DataError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

Row = Mapping[str, Any]

WRITERS: Registry[Writer] = Registry("bulk writer", lazy={
    # Each module registers its writer when imported, on a dialect's first upsert.
    "postgresql": "seedguard.upsert.postgresql",
    "sqlite": "seedguard.upsert.sqlite",
    "mysql": "seedguard.upsert.mysql",
    "mariadb": "seedguard.upsert.mysql",
})


class Writer(ByDialect):
    """Writes missing and changed rows of one table by ``key``, for one upsert.

    ``columns`` are the columns every row has; ``update_columns`` those an
    existing row gets from the data (empty: insert missing rows only).
    """

    registry = WRITERS

    def __init__(self, conn: Connection, table: sa.Table, key: tuple[str, ...],
                 columns: tuple[str, ...], update_columns: tuple[str, ...]) -> None:
        self.conn = conn
        self.table = table
        self.key = key
        self.columns = columns
        self.update_columns = update_columns
        # True while rows may go straight into a table locked for an initial
        # load (see lock_for_load); a writer turns it off when that fails.
        self.direct = False

    def lock_for_load(self) -> bool:
        """The table is empty: lock out other writers if that makes the load cheaper.

        Called once, before the first write. True means the lock is held to
        the end of the transaction (the core then checks emptiness again).
        """
        return False

    def write(self, rows: Sequence[Row], *, all_new: bool) -> None:
        """Insert ``rows``, updating those whose key exists by then.

        Each key appears once in ``rows``. ``all_new``: no row's key was in
        the table when the core looked.
        """
        raise NotImplementedError

    def merge_compared(self, rows: Sequence[Row], compare: tuple[str, ...]
                       ) -> tuple[int, int] | None:
        """Write ``rows``, comparing them with the table in the database itself.

        For a database where reading the existing rows back costs more than
        the write (MySQL/MariaDB through PyMySQL). Writes only the missing
        rows and those whose ``compare`` columns differ, and returns
        ``(inserted, updated)``; None: not done, the core compares instead.
        Each key appears once in ``rows``.
        """
        return None

    def finish(self) -> None:
        """Called once after the last write."""


def writer_for(conn: Connection, table: sa.Table, key: tuple[str, ...],
               columns: tuple[str, ...], update_columns: tuple[str, ...]) -> Writer:
    """The writer for ``conn``'s dialect; DataError for a dialect without one."""
    writer = WRITERS.require(conn.dialect.name, DataError)
    return writer(conn, table, key, columns, update_columns)
