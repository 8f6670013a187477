"""PostgreSQL: multi-row ``VALUES ... ON CONFLICT`` for small writes, COPY for large ones.

The write never goes through ``executemany`` of an ``ON CONFLICT``
statement: SQLAlchemy 2.1 turns off insertmanyvalues batching for those on
psycopg2 (sqlalchemy#13130), one round trip per row. Small writes are one
multi-row ``VALUES`` statement per chunk; large ones are ``COPY``-ed into a
temporary table (psycopg 3 and psycopg2) and merged with one ``INSERT ...
SELECT ... ON CONFLICT``. Into an empty table, locked for the load, rows are
``COPY``-ed straight in.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seedguard.errors import DataError
from seedguard.upsert.base import Row, Writer

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

PG_COPY_THRESHOLD = 50
"""Rows to write in one batch from which PostgreSQL uses COPY + INSERT ... SELECT.

Measured with ``python bench/run.py --only threshold``: COPY lost at 30 rows
(0.9x) and won from 100 rows (1.7-1.9x, 4.7-6.6x at 1,000) with psycopg 3 and
psycopg2; below the crossover the temporary table's extra round trips cost more
than the one multi-row VALUES statement they replace.
"""

# Server-side parameter binding (psycopg 3) allows 65535 parameters per statement.
_MAX_PARAMS = 30000
_COPY_DRIVERS = frozenset({"psycopg", "psycopg2"})
_COPYABLE = (str, int, float, decimal.Decimal, dt.date, dt.time, uuid.UUID)


class PostgreSQLWriter(Writer):
    dialects = ("postgresql",)

    def __init__(self, conn: Connection, table: sa.Table, key: tuple[str, ...],
                 columns: tuple[str, ...], update_columns: tuple[str, ...]) -> None:
        super().__init__(conn, table, key, columns, update_columns)
        self._max_id: int | None = None
        self._tmp: sa.Table | None = None

    def lock_for_load(self) -> bool:
        """Lock out other writers so COPY can go straight into the empty table.

        Without ON CONFLICT a concurrent insert of the same key would fail the
        COPY, so SHARE ROW EXCLUSIVE (readers still read) is taken until the
        transaction ends. Without the privilege to lock, the merge path is used.
        """
        import sqlalchemy as sa

        if self.conn.dialect.driver not in _COPY_DRIVERS:
            return False
        try:
            with self.conn.begin_nested():
                self.conn.exec_driver_sql(
                    f"LOCK TABLE {self._quoted(self.table)} IN SHARE ROW EXCLUSIVE MODE")
        # SQLAlchemy wraps the driver's error (InsufficientPrivilege) in its own
        # DBAPIError subclass; the driver's exception class never reaches here.
        except sa.exc.DBAPIError as err:
            log.debug("no table lock for a direct COPY (%s); merging instead", err)
            return False
        return True

    def write(self, rows: Sequence[Row], *, all_new: bool) -> None:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        self._track_ids(rows)
        if len(rows) >= PG_COPY_THRESHOLD and self._copyable():
            # Straight in only when no key is there yet: COPY has no ON CONFLICT.
            if not (self.direct and all_new and self._copy_direct(rows)):
                self._copy_merge(rows)
            return
        chunk = max(1, _MAX_PARAMS // len(self.columns))
        for start in range(0, len(rows), chunk):
            stmt = pg_insert(self.table).values([dict(r) for r in rows[start:start + chunk]])
            self.conn.execute(self._on_conflict(stmt))

    def finish(self) -> None:
        """Drop the temporary table, if any, and move the sequence past seeded ids."""
        if self._tmp is not None:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self._quoted(self._tmp)}")
            self._tmp = None
        if self._max_id is not None:
            self._repair_sequence(self._max_id)

    def _track_ids(self, rows: Sequence[Row]) -> None:
        import sqlalchemy as sa
        pk = list(self.table.primary_key.columns)
        if len(pk) != 1 or pk[0].name not in rows[0]:
            return
        if not isinstance(pk[0].type, sa.Integer):
            return
        values = [row[pk[0].name] for row in rows if isinstance(row[pk[0].name], int)]
        if values:
            top = max(values)
            self._max_id = top if self._max_id is None else max(self._max_id, top)

    def _on_conflict(self, stmt: Any) -> Any:
        import sqlalchemy as sa
        updates = {c: stmt.excluded[c] for c in self.update_columns}
        if not updates:
            return stmt.on_conflict_do_nothing(index_elements=list(self.key))
        # The guard keeps a row that meanwhile got the same values from being
        # rewritten (a new row version) if it raced in after our SELECT.
        current = sa.tuple_(*(self.table.c[c] for c in updates))
        proposed = sa.tuple_(*(stmt.excluded[c] for c in updates))
        return stmt.on_conflict_do_update(index_elements=list(self.key), set_=updates,
                                          where=current.is_distinct_from(proposed))

    def _copyable(self) -> bool:
        if self.conn.dialect.driver not in _COPY_DRIVERS:
            return False
        # COPY's text format is written by hand below; JSON, arrays and other
        # structured types go through the VALUES statement, which adapts them.
        import sqlalchemy as sa

        kinds = (sa.String, sa.Integer, sa.Numeric, sa.Boolean, sa.Date, sa.DateTime, sa.Time,
                 sa.Uuid)
        # Enum columns take Python enum members, which COPY's text format cannot spell.
        return all(isinstance(self.table.c[c].type, kinds)
                   and not isinstance(self.table.c[c].type, sa.Enum) for c in self.columns)

    def _copy_direct(self, rows: Sequence[Row]) -> bool:
        """COPY straight into the (locked, initially empty) table; False on a duplicate key."""
        dbapi_error = self.conn.dialect.loaded_dbapi.IntegrityError
        try:
            with self.conn.begin_nested():
                self._copy(self._quoted(self.table), rows)
        except dbapi_error:
            # A key the core did not see: merge (and let it look up) from here on.
            self.direct = False
            return False
        return True

    def _copy_merge(self, rows: Sequence[Row]) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        tmp = self._temporary_table()
        self.conn.exec_driver_sql(f"TRUNCATE {self._quoted(tmp)}")
        self._copy(self._quoted(tmp), rows)
        merge = pg_insert(self.table).from_select(
            list(self.columns), sa.select(*(tmp.c[c] for c in self.columns)))
        self.conn.execute(self._on_conflict(merge))

    def _copy(self, target: str, rows: Sequence[Row]) -> None:
        columns = self.columns
        column_list = ", ".join(self.conn.dialect.identifier_preparer.quote(c) for c in columns)
        copy_sql = f"COPY {target} ({column_list}) FROM STDIN"
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if self.conn.dialect.driver == "psycopg":
                with cursor.copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row([row[c] for c in columns])
            else:  # psycopg2
                cursor.copy_expert(copy_sql, io.StringIO(_copy_text(rows, columns)))
        finally:
            cursor.close()

    def _temporary_table(self) -> sa.Table:
        import sqlalchemy as sa
        if self._tmp is None:
            columns = self.columns
            name = f"_sg_upsert_{uuid.uuid4().hex[:12]}"
            tmp = sa.Table(name, sa.MetaData(),
                           *(sa.Column(c, self.table.c[c].type) for c in columns),
                           prefixes=["TEMPORARY"])
            source = sa.select(*(self.table.c[c] for c in columns))
            compiled = source.compile(dialect=self.conn.dialect)
            # Same column types as the target, no constraints; dropped at commit
            # at the latest, explicitly in finish().
            self.conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {self._quoted(tmp)} ON COMMIT DROP AS {compiled} "
                "WITH NO DATA")
            self._tmp = tmp
        return self._tmp

    def _quoted(self, table: sa.Table) -> str:
        return self.conn.dialect.identifier_preparer.format_table(table)

    def _repair_sequence(self, max_id: int) -> None:
        import sqlalchemy as sa
        # Rows seeded with explicit ids leave a serial/identity sequence behind
        # them, and the app's next plain INSERT fails on a duplicate key.
        # Move the sequence forward only, never back.
        pk = next(iter(self.table.primary_key.columns))
        name = self._quoted(self.table)
        seq = self.conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                {"t": name, "c": pk.name}).scalar()
        if seq is None:
            return
        self.conn.execute(
            sa.text("SELECT setval(CAST(:s AS regclass), :m) "
                    "WHERE :m > COALESCE(pg_sequence_last_value(CAST(:s AS regclass)), 0)"),
            {"s": seq, "m": max_id},
        )
        log.debug("moved sequence %s of %s to %d", seq, name, max_id)


def _copy_text(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """Rows in COPY's text format (tab-separated, ``\\N`` for NULL, backslash escapes)."""
    out = []
    for row in rows:
        out.append("\t".join(_copy_value(row[c]) for c in columns))
    out.append("")
    return "\n".join(out)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    kind = type(value)  # exact types first: this runs once per value of a large load
    if kind is str:
        return value.translate(_ESCAPES)  # type: ignore[no-any-return]
    if kind is int or kind is decimal.Decimal or kind is float:
        return str(value)
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, _COPYABLE):
        return str(value).translate(_ESCAPES)
    raise DataError(f"cannot COPY a value of type {type(value).__name__}: {value!r}")
