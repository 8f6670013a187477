"""Dialect-native bulk upsert by natural key.

How one batch is written (issue 4):

1. Read the existing rows of the batch's keys (key columns plus the columns
   that would be updated) in one ``SELECT ... WHERE key IN (...)``.
2. Sort the batch into missing, changed and unchanged rows in Python. Only
   missing and changed rows are written: on a re-run where most rows hold the
   same values this is several times cheaper than re-upserting everything,
   and unchanged rows are never rewritten (no new row versions, no triggers).
3. Write those rows with the dialect's native upsert, so a row inserted by
   someone else between steps 1 and 3 is updated rather than a unique-key
   error: ``INSERT ... ON CONFLICT (key) DO UPDATE`` on PostgreSQL and SQLite,
   ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB. Existing rows are
   updated in place, so their primary keys (and what references them) stay.

On PostgreSQL the write never goes through ``executemany`` of an ``ON
CONFLICT`` statement: SQLAlchemy 2.1 turns off insertmanyvalues batching for
those on psycopg2 (sqlalchemy#13130), one round trip per row. Small writes are
one multi-row ``VALUES`` statement per chunk; large ones are ``COPY``-ed into a
temporary table (psycopg 3 and psycopg2) and merged with one ``INSERT ...
SELECT ... ON CONFLICT``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import logging
import operator
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from seedguard.errors import DataError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

TableLike = Union["sa.Table", str, Any]
"""A Core ``Table``, an ORM model (anything with ``__table__``) or a table name."""

Row = Mapping[str, Any]

BATCH_SIZE = 5000
"""Rows read, compared and written per round; memory stays flat at this many rows."""

PG_COPY_THRESHOLD = 50
"""Rows to write in one batch from which PostgreSQL uses COPY + INSERT ... SELECT.

Measured with ``python bench/run.py --only threshold``: COPY lost at 30 rows
(0.9x) and won from 100 rows (1.7-1.9x, 4.7-6.6x at 1,000) with psycopg 3 and
psycopg2; below the crossover the temporary table's extra round trips cost more
than the one multi-row VALUES statement they replace.
"""

SNAPSHOT_MIN = 20_000
SNAPSHOT_MAX = 250_000
"""Data of this many rows, into a table of at most SNAPSHOT_MAX rows, is compared
against one read of the whole table rather than per-batch look-ups (memory for
the snapshot stays in the tens of MB)."""

_MISSING = object()
# Server-side parameter binding (psycopg 3) allows 65535 parameters per statement.
_MAX_PARAMS = 30000
_COPY_DRIVERS = frozenset({"psycopg", "psycopg2"})
_COPYABLE = (str, int, float, decimal.Decimal, dt.date, dt.time, uuid.UUID)


@dataclass
class UpsertResult:
    """What an upsert did (or, for a preview, would do).

    ``inserted`` rows were missing, ``updated`` rows existed with other values,
    ``unchanged`` rows already held the same values and were not written.
    ``deleted`` counts rows removed by a data seed's ``prune=True``.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Preview only: the table does not exist yet, so every row counts as an insert.
    table_missing: bool = False

    @property
    def total(self) -> int:
        """Rows given (inserted + updated + unchanged)."""
        return self.inserted + self.updated + self.unchanged


def upsert(
    target: Session | Connection,
    table_or_model: TableLike,
    rows: Iterable[Row],
    *,
    key: str | Sequence[str],
    update: bool | Sequence[str] = True,
    batch_size: int = BATCH_SIZE,
) -> UpsertResult:
    """Insert ``rows`` into ``table_or_model``, updating rows whose ``key`` already exists.

    ``target``: a Session (its connection and transaction are used) or a
    Connection. ``table_or_model``: a Core ``Table``, an ORM model or a table
    name (reflected). ``key``: a column name or a list of them, which must be
    the primary key or a unique constraint/index. ``update``: True updates
    every given non-key column of existing rows, a list updates only those
    columns, False inserts missing rows only. Rows already holding the same
    values are not rewritten. On PostgreSQL, explicit integer primary keys in
    ``rows`` move the table's sequence past the largest one afterwards.

    Every row must have the same columns; the counts assume each key appears
    once in ``rows`` (a repeated key is written again, the last values win).
    Into an empty PostgreSQL table the rows are COPY-ed straight in under a
    SHARE ROW EXCLUSIVE table lock held to the end of the transaction (other
    writers wait; readers do not). On MySQL/MariaDB ``ON DUPLICATE KEY``
    fires on a conflict with any unique key of the table, not just ``key``.
    """
    conn = connection_of(target)
    expected = len(rows) if isinstance(rows, Sequence) else None
    writer = Upserter(conn, resolve_table(conn, table_or_model), key, update, expected=expected)
    for batch in batches(rows, batch_size):
        writer.write(batch)
    writer.finish()
    return writer.result


def connection_of(target: Session | Connection) -> Connection:
    """The Connection of a Session (joined to its transaction) or the Connection itself."""
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(target, Session):
        return target.connection()
    if isinstance(target, Connection):
        return target
    raise TypeError(f"upsert needs a Session or a Connection, not {type(target).__name__}")


def resolve_table(conn: Connection, table_or_model: TableLike) -> sa.Table:
    """A Core Table for a Table, an ORM model or a table name (reflected from ``conn``)."""
    import sqlalchemy as sa
    if isinstance(table_or_model, sa.Table):
        return table_or_model
    table = getattr(table_or_model, "__table__", None)
    if isinstance(table, sa.Table):
        return table
    if isinstance(table_or_model, str):
        schema, _, name = table_or_model.rpartition(".")
        try:
            return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        except sa.exc.NoSuchTableError as err:
            raise DataError(
                f"table {table_or_model!r} does not exist in the database; create it (your "
                "schema migrations) before the seed runs, or check the name"
            ) from err
    raise TypeError(
        f"expected a Table, an ORM model or a table name, not {type(table_or_model).__name__}"
    )


def key_columns(table: sa.Table, key: str | Sequence[str]) -> tuple[str, ...]:
    """``key`` as a tuple of column names, checked to be backed by a unique index."""
    names = (key,) if isinstance(key, str) else tuple(key)
    if not names:
        raise DataError(f"upsert into {table.fullname}: key must name at least one column")
    for name in names:
        if name not in table.c:
            raise DataError(
                f"key column {name!r} is not a column of table {table.fullname} "
                f"(columns: {', '.join(table.c.keys())})", column=name,
            )
    if set(names) not in unique_column_sets(table):
        backed = sorted(" + ".join(cols) for cols in map(sorted, unique_column_sets(table)))
        raise DataError(
            f"key ({', '.join(names)}) of table {table.fullname} is not backed by a primary "
            "key or unique constraint, so rows cannot be matched by it; add a unique "
            f"constraint on ({', '.join(names)}) in your schema, or use a key that has one "
            f"({'; '.join(backed) or 'the table has none'})"
        )
    return names


def unique_column_sets(table: sa.Table) -> list[frozenset[str]]:
    """The column sets of the table's primary key, unique constraints and unique indexes."""
    import sqlalchemy as sa
    sets = []
    if table.primary_key.columns:
        sets.append(frozenset(c.name for c in table.primary_key.columns))
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and constraint.columns:
            sets.append(frozenset(c.name for c in constraint.columns))
    for index in table.indexes:
        if index.unique and all(isinstance(e, sa.Column) for e in index.expressions):
            sets.append(frozenset(c.name for c in index.columns))
    return sets


def batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """``rows`` in lists of at most ``size``, without holding more than one list."""
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Upserter:
    """Writes batches of rows into one table by key; ``dry_run`` only counts.

    Used by :func:`upsert` and by data seeds, which feed it converted batches
    from a file and ask it for a preview in a dry run.
    """

    def __init__(self, conn: Connection, table: sa.Table, key: str | Sequence[str],
                 update: bool | Sequence[str] = True, *, dry_run: bool = False,
                 expected: int | None = None) -> None:
        self.conn = conn
        self.table = table
        self.key = key_columns(table, key)
        self.update = update
        self.dry_run = dry_run
        self.result = UpsertResult()
        self.dialect = conn.dialect.name
        self._columns: tuple[str, ...] | None = None
        self._compare: tuple[str, ...] = ()
        self._max_id: int | None = None
        self._tmp: sa.Table | None = None
        self._empty: bool | None = None
        self._expected = expected
        self._snapshot: dict[Any, Any] | None = None
        # PostgreSQL initial load: COPY straight into the table (see _lock_for_load).
        self._direct = False
        self._column_set: frozenset[str] = frozenset()
        self._key_of: Callable[[Row], Any] = operator.itemgetter(*self.key)
        self._values_of: Callable[[Row], Any] | None = None

    # -- per batch -------------------------------------------------------------

    def write(self, batch: Sequence[Row]) -> None:
        """Compare ``batch`` with the table and write its missing and changed rows."""
        if not batch:
            return
        if self._columns is None:
            self._setup(batch[0])
        for index, row in enumerate(batch):
            if row.keys() != self._column_set:
                raise DataError(
                    f"upsert into {self.table.fullname}: row {self.result.total + index + 1} has "
                    f"columns {sorted(row)}, the first row has {sorted(self._column_set)}; give "
                    "every row the same columns"
                )
        key_of, values_of = self._key_of, self._values_of
        keys = [key_of(row) for row in batch]
        if len(set(keys)) != len(keys):
            seen: set[Any] = set()
            dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise DataError(
                f"upsert into {self.table.fullname}: key {dup!r} ({', '.join(self.key)}) appears "
                "twice in one batch of rows; remove the duplicate"
            )
        if self._empty is None:
            self._empty = self._table_is_empty()
            self._direct = self._empty and self._lock_for_load()
        # Into an empty table everything is an insert: no look-up (a fresh
        # load costs what a plain INSERT costs). ON CONFLICT still guards keys.
        if self._empty:
            existing: dict[Any, Any] = {}
        elif self._snapshot is not None or self._take_snapshot():
            existing = self._snapshot  # type: ignore[assignment]
        else:
            existing = self._existing(keys)
        result = self.result
        changed: list[Row] = []
        for row, k in zip(batch, keys, strict=True):
            old = existing.get(k, _MISSING)
            if old is _MISSING:
                result.inserted += 1
                changed.append(row)
            elif values_of is not None and old != values_of(row):
                result.updated += 1
                changed.append(row)
            else:
                result.unchanged += 1
        if changed and not self.dry_run:
            self._track_ids(changed)
            self._write(changed)

    def finish(self) -> None:
        """Repair the PostgreSQL sequence and drop the temporary table, if any."""
        if self.dry_run:
            return
        if self._tmp is not None:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self._quoted(self._tmp)}")
            self._tmp = None
        if self._max_id is not None and self.dialect == "postgresql":
            self._repair_sequence(self._max_id)

    # -- set-up ----------------------------------------------------------------

    def _setup(self, first: Row) -> None:
        table = self.table
        for name in first:
            if name not in table.c:
                raise DataError(
                    f"{name!r} is not a column of table {table.fullname} "
                    f"(columns: {', '.join(table.c.keys())})", column=name,
                )
        for name in self.key:
            if name not in first:
                raise DataError(f"rows for {table.fullname} lack the key column {name!r}",
                                column=name)
        self._columns = tuple(first)
        self._column_set = frozenset(self._columns)
        others = tuple(c for c in self._columns if c not in self.key)
        if self.update is True:
            self._compare = others
        elif self.update is False:
            self._compare = ()
        else:
            wanted = tuple(self.update)
            for name in wanted:
                if name not in others:
                    raise DataError(
                        f"update column {name!r} is not a non-key column given in the rows "
                        f"for {table.fullname} (given: {', '.join(others) or 'none'})",
                        column=name,
                    )
            self._compare = wanted
        # A scalar for one column, a tuple for several: the shapes _existing returns.
        self._key_of = operator.itemgetter(*self.key)
        self._values_of = operator.itemgetter(*self._compare) if self._compare else None

    def _existing(self, keys: list[Any]) -> dict[Any, Any]:
        """Existing rows of ``keys``: key -> compared values (shaped like the getters' output)."""
        import sqlalchemy as sa

        table, key, n = self.table, self.key, len(self.key)
        cols = [table.c[c] for c in (*key, *self._compare)]
        if n == 1 and self.dialect == "postgresql":
            # One array parameter instead of thousands of IN parameters.
            from sqlalchemy.dialects.postgresql import ARRAY

            column = table.c[key[0]]
            where = column == sa.any_(sa.bindparam("sg_keys", keys, type_=ARRAY(column.type)))
        elif n == 1:
            where = table.c[key[0]].in_(keys)
        else:
            where = sa.tuple_(*(table.c[c] for c in key)).in_(keys)
        rows = self.conn.execute(sa.select(*cols).where(where)).all()
        return _shape(rows, n, len(self._compare))

    def _take_snapshot(self) -> bool:
        """Read the whole table's keys and compared columns once, if that is cheaper.

        Looking up thousands of keys per batch makes PostgreSQL scan the table
        per batch (a hashed ``= ANY`` seq scan), quadratic over a re-run. When
        the data is large, bounded (memory), and about the table's size, one
        read of the table serves every batch instead.
        """
        import sqlalchemy as sa

        if self._expected is None or not SNAPSHOT_MIN <= self._expected <= SNAPSHOT_MAX:
            self._expected = None  # decided once: per-batch look-ups
            return False
        self._expected = None
        count = self.conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar()
        if not count or count > SNAPSHOT_MAX:
            return False
        table, key, n = self.table, self.key, len(self.key)
        rows = self.conn.execute(sa.select(*(table.c[c] for c in (*key, *self._compare))))
        self._snapshot = _shape(rows.all(), n, len(self._compare))
        return True

    def _lock_for_load(self) -> bool:
        """PostgreSQL, empty table: lock out other writers so COPY can go straight in.

        Without ON CONFLICT a concurrent insert of the same key would fail the
        COPY, so SHARE ROW EXCLUSIVE (readers still read) is taken until the
        transaction ends, and emptiness is checked again under it. Without the
        privilege to lock, the merge path is used.
        """
        if self.dialect != "postgresql" or self.dry_run or self.conn.dialect.driver not in \
                _COPY_DRIVERS:
            return False
        try:
            with self.conn.begin_nested():
                self.conn.exec_driver_sql(
                    f"LOCK TABLE {self._quoted(self.table)} IN SHARE ROW EXCLUSIVE MODE")
        except self.conn.dialect.loaded_dbapi.Error as err:
            log.debug("no table lock for a direct COPY (%s); merging instead", err)
            return False
        return self._table_is_empty()

    def _table_is_empty(self) -> bool:
        import sqlalchemy as sa

        if self.dry_run and not sa.inspect(self.conn).has_table(self.table.name,
                                                                schema=self.table.schema):
            # A dry run before the unit (or alembic) that creates the table: every
            # row would be inserted. Querying it would fail, and on PostgreSQL
            # abort the preview's transaction.
            self.result.table_missing = True
            return True
        probe = sa.select(sa.literal(1)).select_from(self.table).limit(1)
        return self.conn.execute(probe).first() is None

    def _track_ids(self, rows: Sequence[Row]) -> None:
        import sqlalchemy as sa
        pk = list(self.table.primary_key.columns)
        if len(pk) != 1 or pk[0].name not in rows[0] or self.dialect != "postgresql":
            return
        if not isinstance(pk[0].type, sa.Integer):
            return
        values = [row[pk[0].name] for row in rows if isinstance(row[pk[0].name], int)]
        if values:
            top = max(values)
            self._max_id = top if self._max_id is None else max(self._max_id, top)

    # -- writing ---------------------------------------------------------------

    @property
    def _update_columns(self) -> tuple[str, ...]:
        return self._compare if self.update is not False else ()

    def _write(self, rows: Sequence[Row]) -> None:
        if self.dialect == "postgresql":
            self._write_postgresql(rows)
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(self.table)
            updates = {c: stmt.excluded[c] for c in self._update_columns}
            stmt = (stmt.on_conflict_do_update(index_elements=list(self.key), set_=updates)
                    if updates else stmt.on_conflict_do_nothing(index_elements=list(self.key)))
            self.conn.execute(stmt, list(rows))
        elif self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            mstmt = mysql_insert(self.table)
            # With nothing to update, "set the key to itself" keeps the existing row.
            mupdates = ({c: mstmt.inserted[c] for c in self._update_columns}
                        or {self.key[0]: self.table.c[self.key[0]]})
            self.conn.execute(mstmt.on_duplicate_key_update(mupdates), list(rows))
        else:
            raise DataError(
                f"upsert does not support the {self.dialect!r} dialect; supported: "
                "postgresql, sqlite, mysql, mariadb"
            )

    def _pg_on_conflict(self, stmt: Any) -> Any:
        import sqlalchemy as sa
        updates = {c: stmt.excluded[c] for c in self._update_columns}
        if not updates:
            return stmt.on_conflict_do_nothing(index_elements=list(self.key))
        # The guard keeps a row that meanwhile got the same values from being
        # rewritten (a new row version) if it raced in after our SELECT.
        current = sa.tuple_(*(self.table.c[c] for c in updates))
        proposed = sa.tuple_(*(stmt.excluded[c] for c in updates))
        return stmt.on_conflict_do_update(index_elements=list(self.key), set_=updates,
                                          where=current.is_distinct_from(proposed))

    def _write_postgresql(self, rows: Sequence[Row]) -> None:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        if len(rows) >= PG_COPY_THRESHOLD and self._copyable():
            if not (self._direct and self._copy_direct(rows)):
                self._copy_merge(rows)
            return
        columns = self._columns
        assert columns is not None
        chunk = max(1, _MAX_PARAMS // len(columns))
        for start in range(0, len(rows), chunk):
            stmt = pg_insert(self.table).values([dict(r) for r in rows[start:start + chunk]])
            self.conn.execute(self._pg_on_conflict(stmt))

    def _copyable(self) -> bool:
        if self.conn.dialect.driver not in _COPY_DRIVERS:
            return False
        # COPY's text format is written by hand below; JSON, arrays and other
        # structured types go through the VALUES statement, which adapts them.
        import sqlalchemy as sa

        kinds = (sa.String, sa.Integer, sa.Numeric, sa.Boolean, sa.Date, sa.DateTime, sa.Time,
                 sa.Uuid)
        columns = self._columns or ()
        # Enum columns take Python enum members, which COPY's text format cannot spell.
        return all(isinstance(self.table.c[c].type, kinds)
                   and not isinstance(self.table.c[c].type, sa.Enum) for c in columns)

    def _copy_direct(self, rows: Sequence[Row]) -> bool:
        """COPY straight into the (locked, initially empty) table; False on a duplicate key."""
        dbapi_error = self.conn.dialect.loaded_dbapi.IntegrityError
        try:
            with self.conn.begin_nested():
                self._copy(self._quoted(self.table), rows)
        except dbapi_error:
            # The data repeats a key across batches: merge (and look up) from here on.
            self._direct = self._empty = False
            return False
        return True

    def _copy_merge(self, rows: Sequence[Row]) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        columns = self._columns
        assert columns is not None
        tmp = self._temporary_table()
        self.conn.exec_driver_sql(f"TRUNCATE {self._quoted(tmp)}")
        self._copy(self._quoted(tmp), rows)
        merge = pg_insert(self.table).from_select(
            list(columns), sa.select(*(tmp.c[c] for c in columns)))
        self.conn.execute(self._pg_on_conflict(merge))

    def _copy(self, target: str, rows: Sequence[Row]) -> None:
        columns = self._columns
        assert columns is not None
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
            columns = self._columns
            assert columns is not None
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


def _shape(rows: Sequence[Any], n: int, m: int) -> dict[Any, Any]:
    """key -> compared values, a scalar for one column and a tuple for several."""
    if n == 1 and m == 1:
        return {r[0]: r[1] for r in rows}
    if n == 1:
        return {r[0]: tuple(r[1:]) for r in rows}
    if m == 1:
        return {tuple(r[:n]): r[n] for r in rows}
    return {tuple(r[:n]): tuple(r[n:]) for r in rows}


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
