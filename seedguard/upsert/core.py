"""The dialect-neutral core of the bulk upsert: match rows by key, write only what differs.

How one batch is written:

1. Read the existing rows of the batch's keys (key columns plus the columns
   that would be updated) in one ``SELECT ... WHERE key IN (...)``.
2. Sort the batch into missing, changed and unchanged rows in Python. Only
   missing and changed rows are written: on a re-run where most rows hold the
   same values this is several times cheaper than re-upserting everything,
   and unchanged rows are never rewritten (no new row versions, no triggers).
3. Hand those rows to the dialect's writer (:mod:`seedguard.upsert.base`),
   which uses the native upsert, so a row inserted by someone else between
   steps 1 and 3 is updated rather than a unique-key error. Existing rows are
   updated in place, so their primary keys (and what references them) stay.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, TypeVar, Union

from seedguard.errors import DataError
from seedguard.upsert.base import Row, Writer, writer_for

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from seedguard.journal import Journal

TableLike = Union["sa.Table", str, Any]
"""A Core ``Table``, an ORM model (anything with ``__table__``) or a table name."""

BATCH_SIZE = 5000
"""Rows read, compared and written per round; memory stays flat at this many rows."""

SNAPSHOT_MIN = 20_000
SNAPSHOT_MAX = 250_000
"""Data of this many rows, into a table of at most SNAPSHOT_MAX rows, is compared
against one read of the whole table rather than per-batch look-ups (memory for
the snapshot stays in the tens of MB)."""

OVERLAY_MAX = 250_000
"""A dry run remembers what this many written rows would hold, for keys that repeat
later; past it, a repeated key's earlier values are unknown and it counts as updated."""

SEEN_MAX = 250_000
"""An empty-table load remembers the keys it wrote exactly, in a set, up to this many
(tens of MB at most); past it, as a bitmap of their hashes (a few MB, however many)."""

_MISSING = object()
_UNKNOWN = object()  # compares unequal to any values: counted as updated
_T = TypeVar("_T")


@dataclass
class UpsertResult:
    """What an upsert did (or, for a preview, would do).

    ``inserted`` rows were missing, ``updated`` rows existed with other values,
    ``unchanged`` rows already held the same values and were not written.
    ``deleted`` counts rows removed by a data seed's ``prune=True``.
    ``unresolved``: in a data seed's dry run, one message per reference
    (``refs=``) that names no row; the rows carrying them are not counted.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Preview only: the table does not exist yet, so every row counts as an insert.
    table_missing: bool = False
    unresolved: list[str] = field(default_factory=list)

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
    columns, False inserts missing rows only. ``batch_size``: rows read,
    compared and written per round (memory stays flat at this many). Rows
    already holding the same values are not rewritten. On PostgreSQL,
    explicit integer primary keys in ``rows`` move the table's sequence past
    the largest one afterwards.

    Every row must have the same columns. A key that appears more than once
    is applied in order: the last values win, and each copy counts against
    the values before it (a repeat with the same values is unchanged), however
    the rows split into batches. A string given for an ``Enum`` column counts
    as the member SQLAlchemy stores it as.
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


def batches(rows: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``rows`` in lists of at most ``size``, without holding more than one list."""
    # islice fills each list in C: a per-row append and length check in
    # Python were a tenth of a fresh 100,000-row load's own work.
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


@dataclass(frozen=True)
class Difference:
    """A row that differs from the table: its key, and per differing column
    ``(table's value, row's value)``; ``columns`` is None when the table lacks the row."""

    key: Any
    columns: dict[str, tuple[Any, Any]] | None


class Upserter:
    """Writes batches of rows into one table by key; ``dry_run`` only counts.

    Used by :func:`upsert` and by data seeds, which feed it converted batches
    from a file and ask it for a preview in a dry run.
    """

    def __init__(self, conn: Connection, table: sa.Table, key: str | Sequence[str],
                 update: bool | Sequence[str] = True, *, dry_run: bool = False,
                 expected: int | None = None,
                 differences: list[Difference] | None = None,
                 journal: Journal | None = None) -> None:
        self.conn = conn
        # A data seed being applied: what each batch inserts and updates is
        # journaled (seedguard.journal), for `seedguard downgrade`.
        self.journal = None if dry_run else journal
        # Dry run: each row that would be inserted or updated, with the columns that differ.
        self.differences = differences
        self.table = table
        self.key = key_columns(table, key)
        self.update = update
        self.dry_run = dry_run
        self.result = UpsertResult()
        self.dialect = conn.dialect.name
        self._columns: tuple[str, ...] | None = None
        self._compare: tuple[str, ...] = ()
        self._writer: Writer | None = None
        self._empty: bool | None = None
        self._expected = expected
        self._snapshot: dict[Any, Any] | None = None
        self._total = expected
        # Dry run: key -> compared values of what earlier batches would have
        # written (nothing is written, so the table cannot tell).
        self._overlay: dict[Any, Any] | None = None
        self._seen: set[Any] | None = set()
        self._bits: bytearray | None = None
        self._hashed: tuple[list[Any], list[int]] | None = None
        self._enums: tuple[tuple[str, Mapping[str, Any]], ...] = ()
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
        column_set = self._column_set
        for index, row in enumerate(batch):
            if row.keys() != column_set:
                raise DataError(
                    f"upsert into {self.table.fullname}: row {self.result.total + index + 1} has "
                    f"columns {sorted(row)}, the first row has {sorted(self._column_set)}; give "
                    "every row the same columns"
                )
        if self._enums:
            batch = [self._with_members(row) for row in batch]
        key_of, values_of = self._key_of, self._values_of
        keys = list(map(key_of, batch))
        unique = len(set(keys)) == len(keys)  # each key once in the batch
        writer = self._writer
        assert writer is not None
        if self._empty is None:
            self._empty = self._table_is_empty()
            if self._empty and not self.dry_run and writer.lock_for_load():
                # Emptiness again, under the lock: a row may have come in between.
                writer.direct = self._table_is_empty()
        if (not self._empty and not self.dry_run and self._overlay is None
                and self._snapshot is None and unique
                and self.journal is None):
            # (The journal needs the rows' values before: the core reads them.)
            counts = writer.merge_compared(batch, self._compare)
            if counts is not None:  # the database compared and wrote what differs
                inserted, updated = counts
                self.result.inserted += inserted
                self.result.updated += updated
                self.result.unchanged += len(batch) - inserted - updated
                return
        # Into an empty table everything is an insert: no look-up (a fresh
        # load costs what a plain INSERT costs), except for the few keys an
        # earlier batch may have written. ON CONFLICT still guards keys.
        if self._empty:
            existing = self._written_before(keys)
        elif self._snapshot is not None or self._take_snapshot():
            existing = self._snapshot  # type: ignore[assignment]
        else:
            existing = self._existing(keys)
        result = self.result
        overlay = self._overlay
        if overlay is None and not existing and unique:
            # None of the keys is there (a fresh load): every row is an insert.
            changed = list(batch)
            result.inserted += len(changed)
        elif overlay is None and unique:
            # Every key once and nothing written in this run that the table
            # does not show yet: compare with the table alone.
            changed = []
            for row, k in zip(batch, keys, strict=True):
                old = existing.get(k, _MISSING)
                if old is _MISSING:
                    result.inserted += 1
                    changed.append(row)
                    if self.differences is not None:
                        self._differ(k, old, row)
                elif values_of is not None and old != values_of(row):
                    result.updated += 1
                    changed.append(row)
                    if self.differences is not None:
                        self._differ(k, old, row)
                else:
                    result.unchanged += 1
        else:
            if overlay is not None and (self._seen or self._bits is not None):
                # A long dry run: keys past the overlay's bound that an earlier
                # batch would have written, with values no longer known.
                overlay = {**self._guesses(keys, overlay), **overlay}
            changed = self._compare_in_order(batch, keys, existing, overlay or {})
        if self.journal is not None and changed:
            # Before the snapshot takes this batch's values: ``existing`` holds
            # the rows as they are in the table now.
            self._journal(changed, existing)
        if self._snapshot is not None and not self._empty:
            # The snapshot was read once: what this batch writes, later ones must see.
            for row in changed:
                self._snapshot[key_of(row)] = values_of(row) if values_of is not None else ()
        if self.dry_run:
            if self._overlay is None:
                self._overlay = {}
            if len(self._overlay) + len(changed) <= OVERLAY_MAX:
                for row in changed:
                    self._overlay[key_of(row)] = values_of(row) if values_of is not None else ()
            else:
                self._remember([key_of(row) for row in changed])
            return
        if self._empty:
            self._remember(keys)
        if changed:
            direct = writer.direct
            writer.write(changed, all_new=not existing)
            if direct and not writer.direct:
                self._empty = False  # a key it did not expect: look up from here on

    def _journal(self, changed: list[Row], existing: Mapping[Any, Any]) -> None:
        """Hand the journal the rows about to be written, as inserts or updates.

        Built by ``map`` over the getters (in C): this runs for every row a data
        seed writes, and the journal's cost is held to a fraction of the write's.
        """
        from seedguard.journal import INSERT, UPDATE

        journal = self.journal
        assert journal is not None
        key, compare = self.key, self._compare
        others = [c for c in self._columns or () if c not in key]
        keys = list(map(self._key_of, changed))
        olds = list(map(existing.get, keys, repeat(_MISSING))) if existing else []
        new = [old is _MISSING for old in olds]
        if not existing or all(new):
            inserted, new_keys = changed, keys
            updated: list[Row] = []
            old_keys: list[Any] = []
        elif not any(new):
            inserted, new_keys, updated, old_keys = [], [], changed, keys
        else:
            kept = [not n for n in new]
            inserted, new_keys = list(compress(changed, new)), list(compress(keys, new))
            updated, old_keys = list(compress(changed, kept)), list(compress(keys, kept))
            olds = list(compress(olds, kept))
        if inserted:
            after = list(map(operator.itemgetter(*others), inserted)) if others else None
            journal.record(self.conn, self.table, INSERT, key, others, new_keys, after=after)
        if updated and self._values_of is not None:
            journal.record(self.conn, self.table, UPDATE, key, compare, old_keys, before=olds,
                           after=list(map(self._values_of, updated)))

    def _compare_in_order(self, batch: Sequence[Row], keys: list[Any], existing: dict[Any, Any],
                          overlay: dict[Any, Any]) -> list[Row]:
        """The rows to write when a key repeats: rows apply in order, the last values win.

        Each copy of a key counts against the values before it (the table's,
        an earlier batch's in a dry run, or an earlier row's), so the counts
        and the outcome do not depend on where the batches split.
        """
        values_of = self._values_of
        result = self.result
        changed: dict[Any, Row] = {}
        for row, k in zip(batch, keys, strict=True):
            if k in changed:
                before = changed[k]
                old = values_of(before) if values_of is not None else ()
            else:
                old = overlay.get(k, _MISSING)
                if old is _MISSING:
                    old = existing.get(k, _MISSING)
            if old is _MISSING:
                result.inserted += 1
                changed[k] = row
            elif values_of is not None and old != values_of(row):
                result.updated += 1
                changed[k] = row
            else:
                result.unchanged += 1
                continue
            if self.differences is not None and old is not _UNKNOWN:
                self._differ(k, old, row)
        return list(changed.values())

    def _differ(self, key: Any, old: Any, row: Row) -> None:
        """Record how ``row`` differs from the table's ``old`` values (missing: _MISSING)."""
        assert self.differences is not None
        if old is _MISSING:
            self.differences.append(Difference(key, None))
            return
        olds = old if len(self._compare) > 1 else (old,)
        columns = {name: (before, row[name])
                   for name, before in zip(self._compare, olds, strict=True)
                   if before != row[name]}
        self.differences.append(Difference(key, columns))

    def _guesses(self, keys: list[Any], overlay: dict[Any, Any]) -> dict[Any, Any]:
        seen = self._seen
        if seen is not None:
            return {k: _UNKNOWN for k in keys if k not in overlay and k in seen}
        bits = self._bits
        assert bits is not None
        mask = len(bits) * 8 - 1
        guessed = {}
        for k in keys:
            h = hash(k) & mask
            if k not in overlay and bits[h >> 3] & (1 << (h & 7)):
                guessed[k] = _UNKNOWN
        return guessed

    def _written_before(self, keys: list[Any]) -> dict[Any, Any]:
        """Empty-table path: the existing rows of the keys an earlier batch may have written.

        The set of the keys written so far (up to SEEN_MAX) names them
        exactly, in C: a hashing loop in Python per key was a tenth of a
        fresh MariaDB load's own time. Past it a bitmap of key hashes (a few
        MB, whatever the number of rows) tells the keys this run certainly
        has not written; only the rest, a small share, is looked up.
        """
        if self.dry_run:
            return {}
        seen = self._seen
        if seen is not None:
            written = seen.intersection(keys) if seen else None
            return self._existing(list(written)) if written else {}
        bits = self._bits
        if bits is None:
            return {}
        mask = len(bits) * 8 - 1
        # Hashed once per batch: _remember() of the same keys reuses them.
        hashes = [hash(k) & mask for k in keys]
        self._hashed = (keys, hashes)
        hits = [k for k, h in zip(keys, hashes, strict=True) if bits[h >> 3] & (1 << (h & 7))]
        return self._existing(hits) if hits else {}

    def _remember(self, keys: list[Any]) -> None:
        seen = self._seen
        if seen is not None:
            if len(seen) + len(keys) <= SEEN_MAX:
                seen.update(keys)
                return
            # Too many to hold exactly: every key so far into the bitmap.
            self._seen = None
            keys = [*seen, *keys]
        bits = self._bits
        if bits is None:
            # About 16 bits per expected row (a false hit costs a look-up of
            # that key only), at least 1 MB, at most 16 MB.
            expected = self._total or 0
            size = 1 << 20
            while size < 2 * expected and size < 1 << 24:
                size <<= 1
            bits = self._bits = bytearray(size)
        mask = len(bits) * 8 - 1
        hashed, self._hashed = self._hashed, None
        hashes = hashed[1] if hashed is not None and hashed[0] is keys \
            else [hash(k) & mask for k in keys]
        for h in hashes:
            bits[h >> 3] |= 1 << (h & 7)

    def _with_members(self, row: Row) -> Row:
        # An Enum column reads back enum members; the same value given as the
        # string SQLAlchemy stores must compare equal to it, not as a change.
        converted = dict(row)
        for name, lookup in self._enums:
            value = converted[name]
            if isinstance(value, str):
                converted[name] = lookup.get(value, value)
        return converted

    def finish(self) -> None:
        """Let the writer tidy up (PostgreSQL: the sequence, the temporary table)."""
        if self.dry_run or self._writer is None:
            return
        self._writer.finish()

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
        enums = []
        for name in self._columns:
            kind = table.c[name].type
            # SQLAlchemy's own map of stored strings to members (None for an
            # Enum without an enum class, which reads back strings anyway).
            lookup = getattr(kind, "_object_lookup", None) if getattr(
                kind, "enum_class", None) is not None else None
            if lookup:
                enums.append((name, lookup))
        self._enums = tuple(enums)
        self._writer = writer_for(self.conn, table, self.key, self._columns,
                                  self._compare if self.update is not False else ())

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


def _shape(rows: Sequence[Any], n: int, m: int) -> dict[Any, Any]:
    """key -> compared values, a scalar for one column and a tuple for several."""
    if n == 1 and m == 1:
        return {r[0]: r[1] for r in rows}
    if n == 1:
        return {r[0]: tuple(r[1:]) for r in rows}
    if m == 1:
        return {tuple(r[:n]): r[n] for r in rows}
    return {tuple(r[:n]): tuple(r[n:]) for r in rows}
