"""MySQL and MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE`` through executemany.

``ON DUPLICATE KEY`` fires on a conflict with any unique key of the table, not
just the upsert's key; MySQL has no way to name the one conflict target.
"""

from __future__ import annotations

from collections.abc import Sequence

from seedguard.upsert.base import Row, Writer


class MySQLWriter(Writer):
    dialects = ("mysql", "mariadb")

    def write(self, rows: Sequence[Row], *, all_new: bool) -> None:
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(self.table)
        # With nothing to update, "set the key to itself" keeps the existing row.
        updates = ({c: stmt.inserted[c] for c in self.update_columns}
                   or {self.key[0]: self.table.c[self.key[0]]})
        self.conn.execute(stmt.on_duplicate_key_update(updates), list(rows))
