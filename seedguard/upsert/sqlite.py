"""SQLite: ``INSERT ... ON CONFLICT (key) DO UPDATE`` through executemany."""

from __future__ import annotations

from collections.abc import Sequence

from seedguard.upsert.base import Row, Writer


class SQLiteWriter(Writer):
    dialects = ("sqlite",)

    def write(self, rows: Sequence[Row], *, all_new: bool) -> None:
        from sqlalchemy.dialects.sqlite import insert

        stmt = insert(self.table)
        updates = {c: stmt.excluded[c] for c in self.update_columns}
        stmt = (stmt.on_conflict_do_update(index_elements=list(self.key), set_=updates)
                if updates else stmt.on_conflict_do_nothing(index_elements=list(self.key)))
        self.conn.execute(stmt, list(rows))
