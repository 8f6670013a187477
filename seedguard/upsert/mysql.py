"""MySQL and MariaDB: ``LOAD DATA LOCAL INFILE`` for large writes, multi-row VALUES otherwise.

Large writes (``LOAD_THRESHOLD`` rows and more, simple column types, PyMySQL)
are written to a tab-separated file and loaded with ``LOAD DATA LOCAL
INFILE``: into an empty table, locked for the load, straight in; otherwise
into a temporary table (MEMORY where the rows fit), compared with the table
in the server, and merged: a batch whose rows all differ or are missing with
one ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE``, any other with an
``UPDATE ... JOIN`` of the rows that differ and an ``INSERT ... SELECT`` of
the missing ones. That is the bulk path the MySQL manual recommends, about
2x ``executemany`` through PyMySQL for a fresh load here (``python
bench/run.py --only mysqlbulk``).

``LOCAL`` turns errors into warnings (a duplicate key is skipped, a value that
does not fit is cut), so each load runs in a savepoint and is checked: fewer
rows than sent or any warning rolls it back, and the rows go through the
``VALUES`` statement instead, which raises the real error. So does a
temporary table the server will not create (no ``CREATE TEMPORARY TABLES``
privilege).

The client must allow it (``local_infile=True`` in PyMySQL's connect
arguments, e.g. ``mysql+pymysql://.../db?local_infile=1``; off by default,
since a client that allows it sends any file a server asks for) and the
server too (``local_infile`` ON). When either refuses, seedguard logs it once
and writes through the ``VALUES`` statement, PyMySQL's ``executemany`` of
``INSERT ... ON DUPLICATE KEY UPDATE`` (multi-row statements up to 1 MB).

``ON DUPLICATE KEY`` fires on a conflict with any unique key of the table, not
just the upsert's key; MySQL has no way to name the one conflict target.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import itertools
import logging
import math
import operator
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from seedguard.upsert.base import Row, Writer

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

LOAD_THRESHOLD = 500
"""Rows to write in one batch from which ``LOAD DATA LOCAL INFILE`` is used."""

_LOAD_DRIVERS = frozenset({"pymysql"})
# Errors that mean "LOAD DATA LOCAL is not allowed here": ER_NOT_ALLOWED_COMMAND (MySQL
# 5.7, older MariaDB), ER_LOAD_INFILE_CAPABILITY_DISABLED (MariaDB 10.5+: the server's
# or the client's setting), ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8) and
# CR_LOAD_DATA_LOCAL_INFILE_REJECTED.
_REFUSED = frozenset({1148, 4166, 3948, 2068})
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
_TABLE_FULL = 1114  # ER_RECORD_FILE_FULL: a MEMORY table past max_heap_table_size
_SAVEPOINT = "seedguard_load"
_SEQ = "seedguard_seq"
"""The temporary table's column that numbers its rows in the data's order."""
_MEMORY_BYTES = 8 << 20
"""A batch estimated larger than this in a MEMORY table (half the default
max_heap_table_size) goes into one of the default engine."""
_refusal_logged = False
# The DB-API connections that refused it: the client's flag and the server's
# setting hold for a connection's life, so later upserts on it do not ask again.
_refused_on: weakref.WeakSet[Any] = weakref.WeakSet()


class _NotLoadable(Exception):
    """A value the tab-separated file cannot spell exactly: use the VALUES statement."""


class _TableFull(Exception):
    """The MEMORY temporary table cannot hold the batch."""


class MySQLWriter(Writer):
    dialects = ("mysql", "mariadb")

    def __init__(self, conn: Connection, table: sa.Table, key: tuple[str, ...],
                 columns: tuple[str, ...], update_columns: tuple[str, ...]) -> None:
        super().__init__(conn, table, key, columns, update_columns)
        self._tmp: str | None = None
        self._formats: list[Callable[[Any], str]] | None = None
        # The whole line's format when every column is text or a number.
        self._plain: str | None = None
        self._getter: Callable[[Row], Any] = operator.itemgetter(*columns)
        self._refused = False
        # The temporary table's engine: None until decided, then MEMORY or not.
        self._memory: bool | None = None
        self._no_temporary = False  # the server would not create it: VALUES instead
        # The temporary table's row number, named unlike every column of the
        # target (CREATE ... SELECT would merge a column of the same name).
        taken = {c.name.lower() for c in table.c}
        self._seq = next(name for n in itertools.count()
                         if (name := f"{_SEQ}{n or ''}").lower() not in taken)

    # -- the procedure ----------------------------------------------------------

    def lock_for_load(self) -> bool:
        """Lock the empty table's key range so the load can go straight in.

        A locking read of an empty table takes InnoDB's next-key lock on its
        end (REPEATABLE READ, the default): other inserts wait until this
        transaction ends; readers do not. Under READ COMMITTED there is no gap
        lock, and the checked load still falls back to the merge on a
        duplicate key.
        """
        if not self._loadable():
            return False
        self.conn.exec_driver_sql(f"SELECT 1 FROM {self._quoted()} LIMIT 1 FOR UPDATE").all()
        return True

    def write(self, rows: Sequence[Row], *, all_new: bool) -> None:
        if len(rows) >= LOAD_THRESHOLD and self._loadable():
            try:
                data = self._tsv(rows)
            except _NotLoadable as err:
                log.debug("rows for %s go through VALUES: %s", self.table.fullname, err)
            else:
                if self.direct and all_new:
                    if self._load(self._quoted(), data, len(rows)):
                        return
                    self.direct = False  # a key it did not expect: merge from here on
                if not self._refused and self._merge(data, len(rows)):
                    return
        self._values(rows)

    def finish(self) -> None:
        """Drop the temporary table, if any."""
        if self._tmp is not None:
            self.conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {self._tmp}")
            self._tmp = None

    # -- the paths --------------------------------------------------------------

    def _values(self, rows: Sequence[Row]) -> None:
        """``INSERT ... VALUES ... ON DUPLICATE KEY UPDATE``, many rows per statement."""
        if not self._simple_types():
            # Types SQLAlchemy must convert (Enum members, JSON, ...): its own executemany.
            from sqlalchemy.dialects.mysql import insert

            stmt = insert(self.table)
            # With nothing to update, "set the key to itself" keeps the existing row.
            updates = ({c: stmt.inserted[c] for c in self.update_columns}
                       or {self.key[0]: self.table.c[self.key[0]]})
            self.conn.execute(stmt.on_duplicate_key_update(updates), list(rows))
            return
        # PyMySQL's executemany sends multi-row statements of up to 1 MB; the
        # Core statement would bind and process every value in Python first.
        columns = ", ".join(self._q(c) for c in self.columns)
        marks = ", ".join(["%s"] * len(self.columns))
        sql = (f"INSERT INTO {self._quoted()} ({columns}) VALUES ({marks}) "
               f"ON DUPLICATE KEY UPDATE {self._updates()}")
        names = self.columns
        self.conn.exec_driver_sql(sql, [tuple(row[c] for c in names) for row in rows])

    def merge_compared(self, rows: Sequence[Row], compare: tuple[str, ...]
                       ) -> tuple[int, int] | None:
        """Load ``rows`` into a temporary table and merge only the missing and changed ones.

        The comparison happens in the server: reading the existing rows back
        through PyMySQL (a pure-Python row parser) cost more than writing
        them all, and made a full-table update slower than a plain
        ``executemany``. Values compare byte for byte (``BINARY ... <=>``,
        NULL-safe): a case-insensitive collation must not hide 'Admin' ->
        'admin', as Python's comparison would not.
        """
        if len(rows) < LOAD_THRESHOLD or not self._loadable():
            return None
        try:
            data = self._tsv(rows)
        except _NotLoadable:
            return None
        if not self._into_temporary(data, len(rows)):
            return None
        q, tmp, target = self._q, self._tmp, self._quoted()
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in self.key)
        missing = " AND ".join(f"t.{q(k)} IS NULL" for k in self.key)
        differs = " OR ".join(f"NOT (BINARY t.{q(c)} <=> BINARY s.{q(c)})"
                              for c in compare) or "FALSE"
        counted = self.conn.exec_driver_sql(
            f"SELECT COALESCE(SUM({missing}), 0), "
            f"COALESCE(SUM(NOT ({missing}) AND ({differs})), 0) "
            f"FROM {tmp} s LEFT JOIN {target} t ON {on}").one()
        new, changed = int(counted[0]), int(counted[1])
        if new + changed == len(rows):
            # Every row is missing or differs (a full-table update): all of
            # them from the temporary table, ON DUPLICATE KEY UPDATE. The
            # cheapest write: an UPDATE ... JOIN of the same rows took longer
            # in the server (docs/benchmarks.md, "MariaDB bulk path").
            self._merge_loaded()
            return new, changed
        # A mixed batch: only the changed and the missing rows are written (an
        # unchanged row gets no new version and fires no trigger).
        if changed:
            sets = ", ".join(f"t.{q(c)} = s.{q(c)}" for c in compare)
            self.conn.exec_driver_sql(
                f"UPDATE {target} t JOIN {tmp} s ON {on} SET {sets} WHERE {differs}")
        if new:
            self._insert_missing(f"FROM {tmp} s LEFT JOIN {target} t ON {on} WHERE {missing}")
        return new, changed

    def _insert_missing(self, source: str) -> None:
        """Insert the temporary table's rows the target lacks (``source``), in the data's order."""
        import sqlalchemy as sa

        q, target = self._q, self._quoted()
        columns = ", ".join(q(c) for c in self.columns)
        savepoint = self.conn.begin_nested()
        try:
            picked = ", ".join(f"s.{q(c)}" for c in self.columns)
            self.conn.exec_driver_sql(
                f"INSERT INTO {target} ({columns}) SELECT {picked} {source} "
                f"ORDER BY s.{self._seq}")
        except sa.exc.IntegrityError as err:
            savepoint.rollback()
            if _code(err) != _DUPLICATE_KEY:
                raise
            # A missing row collides with an existing one on another unique
            # key: ON DUPLICATE KEY UPDATE updates that row, as the VALUES
            # statement would.
            picked = ", ".join(f"s.{q(c)} AS sg_{i}" for i, c in enumerate(self.columns))
            names = ", ".join(f"sg_{i}" for i in range(len(self.columns)))
            # Through a derived table whose columns have names of their own: the
            # target's names in ON DUPLICATE KEY UPDATE then mean only the target's.
            self.conn.exec_driver_sql(
                f"INSERT INTO {target} ({columns}) SELECT {names} FROM (SELECT {picked}, "
                f"s.{self._seq} AS sg_seq {source}) AS sg_missing ORDER BY sg_seq "
                f"ON DUPLICATE KEY UPDATE {self._updates()}")
        else:
            savepoint.commit()

    def _into_temporary(self, data: bytes, count: int) -> bool:
        """Load ``data`` into the (emptied) temporary table, creating it the first time."""
        if self._no_temporary:
            return False
        if self._tmp is None:
            if not self._create_temporary(count):
                return False
        else:
            self.conn.exec_driver_sql(f"DELETE FROM {self._tmp}")
        assert self._tmp is not None
        try:
            return self._load(self._tmp, data, count)
        except _TableFull:
            # The MEMORY table filled up (its rows are fixed-width, capped by
            # max_heap_table_size): the rest of this upsert uses the default engine.
            log.debug("MEMORY temporary table full for %s", self.table.fullname)
            self.finish()
            self._memory = False
            if not self._create_temporary(count):
                return False
            assert self._tmp is not None
            return self._load(self._tmp, data, count)

    def _create_temporary(self, count: int) -> bool:
        """The temporary table: the target's columns, a unique key, a load order.

        The key is unique as in the target, in its collation: keys that
        Python holds distinct but the table equal ('A', 'a' under a
        case-insensitive collation) make the load skip one with a warning,
        so the batch goes through the VALUES statement, where the last one
        wins, instead of an ``UPDATE ... JOIN`` picking either. ``_seq``
        numbers the rows in the data's order, the order new rows are
        inserted in (and their AUTO_INCREMENT values taken). ``ENGINE=MEMORY``
        where the rows fit: loading and emptying it cost a half of InnoDB's.
        """
        import sqlalchemy as sa

        name = self._q(f"sg_load_{os.getpid()}_{id(self) & 0xFFFFFF:x}")
        columns = ", ".join(self._q(c) for c in self.columns)
        unique = ", ".join(self._q(k) for k in self.key)
        if self._memory is None:
            self._memory = _fits_in_memory(self.table, self.columns, count)
        engine = " ENGINE=MEMORY" if self._memory else ""
        savepoint = self.conn.begin_nested()
        try:
            self.conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {name} ({self._seq} BIGINT NOT NULL AUTO_INCREMENT, "
                f"PRIMARY KEY USING BTREE ({self._seq}), UNIQUE KEY ({unique})){engine} "
                f"AS SELECT {columns} "
                f"FROM {self._quoted()} LIMIT 0")
        except sa.exc.DBAPIError as err:
            savepoint.rollback()
            if self._memory:
                # A column MEMORY cannot hold (BLOB/TEXT, a spatial type), or no
                # MEMORY engine: the default engine.
                log.debug("no MEMORY temporary table for %s: %s", self.table.fullname, err)
                self._memory = False
                return self._create_temporary(count)
            # No CREATE TEMPORARY TABLES privilege, or a key the temporary table
            # cannot repeat: the core compares, and the VALUES statement writes.
            log.debug("no temporary table for %s: %s", self.table.fullname, err)
            self._no_temporary = True
            return False
        savepoint.commit()
        self._tmp = name
        return True

    def _merge(self, data: bytes, count: int) -> bool:
        """Load into a temporary table, then one INSERT ... SELECT ... ON DUPLICATE KEY UPDATE."""
        if not self._into_temporary(data, count):
            return False
        self._merge_loaded()
        return True

    def _merge_loaded(self) -> None:
        """Every row of the temporary table into the target, in the data's order."""
        columns = ", ".join(self._q(c) for c in self.columns)
        picked = ", ".join(f"{self._q(c)} AS sg_{i}" for i, c in enumerate(self.columns))
        names = ", ".join(f"sg_{i}" for i in range(len(self.columns)))
        self.conn.exec_driver_sql(
            f"INSERT INTO {self._quoted()} ({columns}) SELECT {names} FROM (SELECT {picked}, "
            f"{self._seq} AS sg_seq FROM {self._tmp}) AS sg_rows ORDER BY sg_seq "
            f"ON DUPLICATE KEY UPDATE {self._updates()}")

    def _load(self, into: str, data: bytes, count: int) -> bool:
        """``LOAD DATA LOCAL INFILE`` of ``data`` into ``into``, checked; False: not loaded."""
        import sqlalchemy as sa

        fd, path = tempfile.mkstemp(prefix="seedguard-", suffix=".tsv")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            sql = (f"LOAD DATA LOCAL INFILE '{_quote_path(path)}' INTO TABLE {into} "
                   "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
                   f"LINES TERMINATED BY '\\n' {self._column_list()}")
            # One savepoint name, set again before each load and never
            # released: a load that passes costs no RELEASE round trip (a
            # SAVEPOINT of an existing name moves it), one that fails is
            # rolled back to it.
            self.conn.exec_driver_sql(f"SAVEPOINT {_SAVEPOINT}")
            try:
                result = self.conn.exec_driver_sql(sql)
                loaded = result.rowcount
                # The load's OK packet carries its warning count, which PyMySQL
                # keeps on the cursor (1.1+): no second round trip per batch.
                warnings = getattr(result.context.cursor, "warning_count", None)
                if warnings is None:
                    warnings = self.conn.exec_driver_sql("SELECT @@warning_count").scalar()
            except sa.exc.DBAPIError as err:
                self.conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                code = _code(err)
                if code in _REFUSED:
                    self._refuse(err)
                    return False
                if code == _TABLE_FULL and self._memory and into == self._tmp:
                    raise _TableFull from err
                raise
            if loaded != count or warnings:
                # LOCAL skipped or cut something: the VALUES statement says what.
                self.conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                log.debug("LOAD DATA into %s: %s of %s rows, %s warning(s); using VALUES",
                          into, loaded, count, warnings)
                return False
            return True
        finally:
            os.unlink(path)

    def _refuse(self, err: Exception) -> None:
        global _refusal_logged
        self._refused = True
        with contextlib.suppress(TypeError):  # a driver connection that takes no weakref
            _refused_on.add(self.conn.connection.dbapi_connection)
        if not _refusal_logged:
            _refusal_logged = True
            log.info(
                "LOAD DATA LOCAL INFILE refused (%s); bulk upserts on MySQL/MariaDB use "
                "multi-row INSERT ... ON DUPLICATE KEY UPDATE instead. For the faster path "
                "allow it on the client (PyMySQL: ?local_infile=1 in the URL, or "
                "connect_args={'local_infile': True}) and the server (local_infile=ON)",
                getattr(err, "orig", err))

    # -- the file ---------------------------------------------------------------

    def _loadable(self) -> bool:
        if self._refused or self.conn.dialect.driver not in _LOAD_DRIVERS:
            return False
        if self.conn.connection.dbapi_connection in _refused_on:
            self._refused = True
            return False
        return self._simple_types()

    def _simple_types(self) -> bool:
        if self._formats is not None:
            return True
        formats = []
        for name in self.columns:
            fmt = _format_for(self.table.c[name].type)
            if fmt is None:
                return False
            formats.append(fmt)
        self._formats = formats
        if len(self.columns) > 1 and all(f in (_text, _integer, _number) for f in formats):
            self._plain = "\t".join(["%s"] * len(self.columns))
        return True

    def _tsv(self, rows: Sequence[Row]) -> bytes:
        plain = self._plain
        if plain is not None:
            # Row by row, one %-format each (in C), where the values are only
            # str and int for text and number columns: str() spells each one
            # as the file does. A tab, newline, backslash, CR or NUL in a
            # value shows in the counts or the search below; None and other
            # types in the type set: then the column-by-column path.
            values = list(map(self._getter, rows))
            if set(map(type, itertools.chain.from_iterable(values))) <= _PLAIN_TYPES:
                text = "\n".join(map(plain.__mod__, values))
                if (text.count("\t") == len(values) * (len(self.columns) - 1)
                        and text.count("\n") == len(values) - 1
                        and "\\" not in text and "\r" not in text and "\0" not in text):
                    return (text + "\n").encode("utf-8")
        formats = self._formats
        assert formats is not None
        # Column by column: one type check per column where it holds, not one
        # formatter call per value (the file is on the fresh load's critical path).
        if len(self.columns) == 1:
            columns: list[Any] = [[row[self.columns[0]] for row in rows]]
        else:
            columns = list(zip(*map(operator.itemgetter(*self.columns), rows), strict=True))
        fields = [_spell(list(values), fmt) for values, fmt in zip(columns, formats, strict=True)]
        lines = list(map("\t".join, zip(*fields, strict=True)))
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _column_list(self) -> str:
        # Binary columns come as hex through a user variable: the file's
        # character set never touches their bytes.
        targets, sets = [], []
        for index, name in enumerate(self.columns):
            if _is_binary(self.table.c[name].type):
                targets.append(f"@sg_b{index}")
                sets.append(f"{self._q(name)} = UNHEX(@sg_b{index})")
            else:
                targets.append(self._q(name))
        return f"({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else "")

    # -- SQL text ---------------------------------------------------------------

    def _updates(self) -> str:
        columns = self.update_columns or (self.key[0],)
        if not self.update_columns:
            # With nothing to update, "set the key to itself" keeps the existing row.
            return f"{self._q(columns[0])} = {self._q(columns[0])}"
        return ", ".join(f"{self._q(c)} = VALUES({self._q(c)})" for c in columns)

    def _q(self, name: str) -> str:
        return str(self.conn.dialect.identifier_preparer.quote(name))

    def _quoted(self) -> str:
        return str(self.conn.dialect.identifier_preparer.format_table(self.table))


_NULL = "\\N"
# LOAD DATA's default escapes (ESCAPED BY '\\'): the escape character itself,
# the field and line terminators, and NUL.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


_PLAIN_TYPES = frozenset({str, int})
_SPECIAL = re.compile(r"[\\\t\n\r\0]")


def _spell(values: list[Any], fmt: Callable[[Any], str]) -> list[str]:
    """``values`` as the file spells them."""
    kinds = set(map(type, values))
    if fmt is _text and kinds == {str}:
        if _SPECIAL.search("".join(values)) is None:
            return values  # nothing to escape, nothing to convert
        return [v.translate(_ESCAPES) for v in values]
    if fmt in (_integer, _number) and kinds == {int}:
        return list(map(str, values))
    return [_NULL if v is None else fmt(v) for v in values]


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        text = str(value)
    else:  # bytes, bool, dates, ...: as SQLAlchemy would bind them, not as str() spells them
        raise _NotLoadable(f"{type(value).__name__} value for a text column")
    # translate() is a pass per character; most values have nothing to escape.
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text or "\0" in text:
        return text.translate(_ESCAPES)
    return text


def _integer(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _text(value)  # the server converts it as it would in VALUES; a warning aborts
    raise _NotLoadable(f"{type(value).__name__} value for an integer column")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, decimal.Decimal)):
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            raise _NotLoadable("a non-finite Decimal")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotLoadable("a non-finite float")
        return repr(value)
    if isinstance(value, str):
        return _text(value)
    raise _NotLoadable(f"{type(value).__name__} value for a numeric column")


def _boolean(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return "1" if value else "0"
    raise _NotLoadable(f"{type(value).__name__} value for a boolean column")


def _temporal(value: Any) -> str:
    if isinstance(value, (dt.datetime, dt.time)):
        if value.tzinfo is not None:
            raise _NotLoadable("a timezone-aware value")  # SQLAlchemy's own conversion applies
        return value.isoformat(" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return _text(value)
    raise _NotLoadable(f"{type(value).__name__} value for a date/time column")


def _binary(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    raise _NotLoadable(f"{type(value).__name__} value for a binary column")


def _is_binary(kind: Any) -> bool:
    import sqlalchemy as sa

    return isinstance(kind, sa.types._Binary)


def _format_for(kind: Any) -> Callable[[Any], str] | None:
    """How a column's values are spelled in the file; None: only VALUES spells them right."""
    import sqlalchemy as sa

    # Types with a Python-side conversion (Enum members, JSON documents,
    # intervals, PickleType, TypeDecorators) go through SQLAlchemy.
    if isinstance(kind, (sa.Enum, sa.JSON, sa.Interval, sa.PickleType, sa.TypeDecorator)):
        return None
    if _is_binary(kind):
        return _binary
    if isinstance(kind, sa.Boolean):
        return _boolean
    if isinstance(kind, sa.Integer):
        return _integer
    if isinstance(kind, (sa.Numeric, sa.Float)):
        return _number
    if isinstance(kind, (sa.DateTime, sa.Date, sa.Time)):
        return _temporal
    if isinstance(kind, sa.String):
        return _text
    return None


def _code(err: Exception) -> Any:
    """The server's error number of a DBAPIError, if any."""
    orig = getattr(err, "orig", None)
    return orig.args[0] if orig is not None and orig.args else None


def _fits_in_memory(table: sa.Table, columns: tuple[str, ...], rows: int) -> bool:
    """Whether ``rows`` rows of ``columns`` fit a MEMORY table comfortably.

    MEMORY stores rows at their full declared width (a VARCHAR(255) in
    utf8mb4 takes 1,020 bytes whatever it holds) and has no BLOB/TEXT; the
    estimate errs large, and a table that fills up anyway is replaced.
    """
    import sqlalchemy as sa

    width = 16  # the sequence, the row's header
    for name in columns:
        kind = table.c[name].type
        if isinstance(kind, (sa.Text, sa.JSON, sa.PickleType)):
            return False
        if isinstance(kind, sa.String) or _is_binary(kind):
            length = getattr(kind, "length", None)
            if not length:
                return False  # TEXT or BLOB, as far as anyone can tell
            width += 4 * length + 2
        else:
            width += 16
    return width * rows <= _MEMORY_BYTES


def _quote_path(path: str) -> str:
    # A path from mkstemp in the temp dir; escaped anyway for the string literal.
    return path.replace("\\", "\\\\").replace("'", "\\'")
