"""Data seeds: a unit whose work is an upsert of rows from a list, a CSV or a JSON file.

Files are streamed: CSV with :mod:`csv`, JSON (a list of objects) with an
incremental decoder, both in batches of :data:`seedguard.upsert.BATCH_SIZE`
rows, so memory stays flat however large the file is. Every value is converted
to its column's type; a value that does not convert raises
:class:`~seedguard.errors.DataError` naming the file, line and column.

With ``version=None`` the unit is version 1 with ``on_change="rerun"``: its
checksum is a hash of the data (the file, read in blocks), so changing the
file re-applies the unit and an unchanged file costs one hash and no writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedguard.checksum import data_checksum
from seedguard.errors import DataError, DefinitionError
from seedguard.events import report_progress
from seedguard.unit import SeedUnit
from seedguard.upsert import BATCH_SIZE, TableLike, Upserter, UpsertResult, batches, resolve_table

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

_BLOCK = 1 << 20
_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})
_WS = re.compile(r"\s*")


def data_seed(
    name: str,
    *,
    table: TableLike,
    key: str | Sequence[str],
    rows: Iterable[Mapping[str, Any]] | None = None,
    path: str | os.PathLike[str] | None = None,
    version: int | None = None,
    prune: bool = False,
    contexts: Iterable[str] | None = None,
    after: Iterable[str] = (),
    update: bool | Sequence[str] = True,
    encoding: str = "utf-8-sig",
    description: str | None = None,
) -> SeedUnit:
    """Declare (and register) a unit that upserts ``rows`` or the file at ``path`` by ``key``.

    :param name: the unit's name, as for :func:`seedguard.seed`.
    :param table: a Core ``Table``, an ORM model, or a table name (reflected
        when the unit runs).
    :param key: the column (or list of columns) that identifies a row; it
        needs a primary key or unique index.
    :param rows: the data as a list of dicts; give this or ``path``.
    :param path: a ``.csv`` file with a header row or a ``.json`` file holding
        a list of objects; a relative path is resolved against the directory
        of the file that calls ``data_seed``.
    :param version: None: re-apply whenever the data changes (its checksum);
        a number: re-apply only when it is raised (a data change is reported
        as drift).
    :param prune: True DELETES every row of the table whose key is not in the
        data.
    :param contexts: the contexts the unit runs in; None: always.
    :param after: names of units that must be applied before this one.
    :param update: True: update changed columns of existing rows; False: only
        insert missing rows; a list of column names: update only those.
    :param encoding: the file's text encoding (the default also strips a BOM).
    :param description: shown by ``status`` and ``history``; default: the
        table and key.
    """
    frame = sys._getframe(1)
    caller = frame.f_code.co_filename
    if (rows is None) == (path is None):
        raise DefinitionError(f"data seed {name!r}: give exactly one of rows= or path=")
    if isinstance(after, str):
        after = [after]
    if isinstance(contexts, str):
        contexts = [contexts]
    source: _Source
    if path is not None:
        source = _FileSource(_resolve_path(path, caller), encoding)
    else:
        assert rows is not None
        source = _RowsSource([dict(row) for row in rows])
    spec = _DataSeed(name, table, key, source, update=update, prune=prune)

    def work(session: Session) -> None:
        spec.run(session.connection(), dry_run=False)

    unit = SeedUnit(
        name=name,
        fn=work,
        version=1 if version is None else version,
        after=tuple(after),
        contexts=frozenset(contexts) if contexts is not None else None,
        on_change="rerun" if version is None else "warn",
        description=description or f"data seed of {spec.table_name} by {spec.key_text}",
        module=str(frame.f_globals.get("__name__", "")),
        origin=f"{caller}:{frame.f_lineno}",
        identity=f"{caller}:data_seed:{name}",
        checksum_fn=spec.checksum,
        preview=spec.preview,
    )
    from seedguard.registry import default_registry

    default_registry.add(unit)
    return unit


class _DataSeed:
    """What a data seed does: convert the source's records and upsert them in batches."""

    def __init__(self, name: str, table: TableLike, key: str | Sequence[str], source: _Source,
                 *, update: bool | Sequence[str], prune: bool) -> None:
        import sqlalchemy as sa
        self.name = name
        self.table = table
        self.key = key
        self.source = source
        self.update = update
        self.prune = prune
        if isinstance(table, str):
            self.table_name = table
        else:
            found = table if isinstance(table, sa.Table) else getattr(table, "__table__", None)
            if not isinstance(found, sa.Table):
                raise DefinitionError(
                    f"data seed {name!r}: table must be a Table, an ORM model or a table name, "
                    f"not {type(table).__name__}"
                )
            self.table_name = found.fullname
        self.key_text = key if isinstance(key, str) else ", ".join(key)

    def checksum(self) -> str:
        # What the seed does counts too: another key or prune re-applies it.
        header = f"data_seed {self.table_name} key={self.key_text} update={self.update!r} " \
                 f"prune={self.prune}\n".encode()
        return data_checksum([header, *self.source.chunks()])

    def preview(self, conn: Connection) -> UpsertResult:
        """What running would do, counted on ``conn`` without writing (dry run)."""
        try:
            resolve_table(conn, self.table)
        except DataError:
            # The table does not exist yet (an earlier pending unit or the
            # schema migrations create it): every row would be inserted.
            return UpsertResult(inserted=sum(1 for _ in self.source.records()))
        return self.run(conn, dry_run=True)

    def run(self, conn: Connection, *, dry_run: bool) -> UpsertResult:
        table = resolve_table(conn, self.table)
        total = self.source.total()
        writer = Upserter(conn, table, self.key, self.update, dry_run=dry_run, expected=total)
        keep: set[tuple[Any, ...]] | None = set() if self.prune else None
        done = 0
        for batch in batches(self._converted(table), BATCH_SIZE):
            writer.write(batch)
            if keep is not None:
                keep.update(tuple(row[c] for c in writer.key) for row in batch)
            done += len(batch)
            report_progress(done, max(total, done) if total is not None else None)
        writer.finish()
        if keep is not None:
            writer.result.deleted = _prune(conn, table, writer.key, keep, dry_run=dry_run)
        return writer.result

    def _converted(self, table: sa.Table) -> Iterator[dict[str, Any]]:
        converters: dict[str, Callable[[Any], Any]] = {}
        text = self.source.text
        for where, record in self.source.records():
            row = {}
            for column, value in record.items():
                convert = converters.get(column)
                if convert is None:
                    if column not in table.c:
                        # In a CSV file the culprit is the header, on line 1.
                        at = f"{self.source.where_path}:1" if text else where
                        raise DataError(
                            f"{at}: {column!r} is not a column of table {table.fullname} "
                            f"(columns: {', '.join(table.c.keys())}); fix the "
                            f"{'header' if text else 'key'} or the table",
                            path=self.source.where_path, line=_line(at), column=column,
                        )
                    convert = converters[column] = _converter(table.c[column], text=text)
                try:
                    row[column] = convert(value)
                except (ValueError, TypeError, ArithmeticError) as err:
                    type_name = table.c[column].type.__class__.__name__
                    raise DataError(
                        f"{where}: column {column!r}: cannot convert {value!r} to {type_name} "
                        f"({err}); fix the value in the data",
                        path=self.source.where_path, line=_line(where), column=column,
                    ) from err
            yield row


def _prune(conn: Connection, table: sa.Table, key: Sequence[str], keep: set[tuple[Any, ...]],
           *, dry_run: bool) -> int:
    """Delete (or count) the rows whose key is not in ``keep``."""
    import sqlalchemy as sa
    cols = [table.c[c] for c in key]
    kept = 0
    doomed: list[tuple[Any, ...]] = []
    for row in conn.execute(sa.select(*cols)):
        k = tuple(row)
        if k in keep:
            kept += 1
        else:
            doomed.append(k)
    if not dry_run and kept != len(keep):
        # Every data key was just written, so every one must be found again. If
        # not, the keys did not round-trip (a type or collation mismatch) and
        # "not in the data" cannot be trusted: deleting could wipe the table.
        raise DataError(
            f"prune of {table.fullname}: {len(keep)} keys were written but {kept} were found "
            "again by value (type or collation mismatch in the key); refusing to delete. "
            "Use a key column whose values compare exactly, or prune=False"
        )
    if not dry_run:
        for start in range(0, len(doomed), 1000):
            chunk = doomed[start:start + 1000]
            if len(cols) == 1:
                where = cols[0].in_([k[0] for k in chunk])
            else:
                where = sa.tuple_(*cols).in_(chunk)
            conn.execute(table.delete().where(where))
    return len(doomed)


# -- sources ------------------------------------------------------------------------


class _Source:
    text = False
    where_path = ""

    def chunks(self) -> Iterator[bytes]:
        raise NotImplementedError

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(where, record) pairs; ``where`` names the place in messages ("file:line")."""
        raise NotImplementedError

    def total(self) -> int | None:
        return None


class _RowsSource(_Source):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def chunks(self) -> Iterator[bytes]:
        yield json.dumps(self.rows, sort_keys=True, default=str).encode()

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for index, row in enumerate(self.rows):
            yield f"rows[{index}]", row

    def total(self) -> int | None:
        return len(self.rows)


class _FileSource(_Source):
    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.where_path = str(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise DefinitionError(
                f"data file {path}: use a .csv file (with a header row) or a .json file "
                "(a list of objects)"
            )
        self.text = suffix == ".csv"
        self._lines: int | None = None

    def chunks(self) -> Iterator[bytes]:
        lines = 0
        last = b"\n"
        try:
            with open(self.path, "rb") as f:
                while block := f.read(_BLOCK):
                    lines += block.count(b"\n")
                    last = block[-1:]
                    yield block
        except FileNotFoundError as err:
            raise DataError(
                f"data file {self.path} not found; relative paths are resolved against the "
                "directory of the module that calls data_seed()", path=str(self.path),
            ) from err
        # For progress: rows are about the lines after the header (the count
        # comes free with the checksum, which every run takes first).
        self._lines = lines + (last != b"\n")

    def total(self) -> int | None:
        if not self.text or self._lines is None:
            return None
        return max(self._lines - 1, 0)

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        try:
            if self.text:
                yield from self._csv_records()
            else:
                yield from self._json_records()
        except FileNotFoundError as err:
            raise DataError(f"data file {self.path} not found", path=str(self.path)) from err
        except UnicodeDecodeError as err:
            raise DataError(
                f"data file {self.path} is not {self.encoding} text ({err.reason} at byte "
                f"{err.start}); save it as UTF-8 or pass encoding=", path=str(self.path),
            ) from err

    def _csv_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        with open(self.path, newline="", encoding=self.encoding) as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(f"{self.path}:1: {err}", path=str(self.path), line=1) from err
            header = [h.strip() for h in header]
            for column in header:
                if not column or header.count(column) > 1:
                    raise DataError(
                        f"{self.path}:1: header has an empty or repeated column {column!r}",
                        path=str(self.path), line=1, column=column,
                    )
            width = len(header)
            try:
                for values in reader:
                    if not values:
                        continue
                    if len(values) != width:
                        raise DataError(
                            f"{self.path}:{reader.line_num}: {len(values)} fields, the header "
                            f"has {width}; fix the row (quote values that contain commas)",
                            path=str(self.path), line=reader.line_num,
                        )
                    yield f"{self.path}:{reader.line_num}", dict(zip(header, values, strict=True))
            except csv.Error as err:
                raise DataError(f"{self.path}:{reader.line_num}: {err}", path=str(self.path),
                                line=reader.line_num) from err

    def _json_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for line, item in _json_items(self.path, self.encoding):
            if not isinstance(item, dict):
                raise DataError(
                    f"{self.path}:{line}: expected an object, got {type(item).__name__}; the "
                    "file must hold a list of objects", path=str(self.path), line=line,
                )
            yield f"{self.path}:{line}", item


def _json_items(path: Path, encoding: str) -> Iterator[tuple[int, Any]]:
    """The items of a top-level JSON list, decoded one at a time with their line numbers."""
    decoder = json.JSONDecoder()
    with open(path, encoding=encoding) as f:
        buf = ""
        pos = 0
        line = 1
        eof = False

        def advance(to: int) -> None:
            nonlocal pos, line
            line += buf.count("\n", pos, to)
            pos = to

        def more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = f.read(_BLOCK)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def peek() -> str:
            while True:
                match = _WS.match(buf, pos)
                assert match is not None
                advance(match.end())
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        def fail(what: str) -> DataError:
            return DataError(f"{path}:{line}: {what}; the file must hold a JSON list of objects",
                             path=str(path), line=line)

        if peek() != "[":
            raise fail("expected '['")
        advance(pos + 1)
        if peek() == "]":
            return
        while True:
            if peek() == "":
                raise fail("unexpected end of file")
            while True:
                try:
                    item, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as err:
                    if more():
                        continue
                    raise fail(f"invalid JSON ({err.msg})") from err
                # A scalar at the buffer's end may continue in the next block.
                if end == len(buf) and not isinstance(item, (dict, list)) and more():
                    continue
                break
            start = line
            advance(end)
            yield start, item
            sep = peek()
            if sep == "]":
                return
            if sep != ",":
                raise fail(f"expected ',' or ']', found {sep!r}" if sep else "unexpected end")
            advance(pos + 1)


# -- conversion ---------------------------------------------------------------------


def _converter(column: sa.Column[Any], *, text: bool) -> Callable[[Any], Any]:
    """A function turning a raw value (a CSV string, a JSON value) into the column's type.

    From CSV an empty field is NULL, except in string columns, where it is ''.
    """
    import sqlalchemy as sa
    kind = column.type
    is_string = isinstance(kind, sa.String)
    parse: Callable[[Any], Any]
    # MySQL/MariaDB store BOOLEAN as TINYINT(1), and reflect it that way.
    if isinstance(kind, sa.Boolean) or (type(kind).__name__ == "TINYINT"
                                        and getattr(kind, "display_width", None) == 1):
        parse = _to_bool
    elif isinstance(kind, sa.Integer):
        parse = _to_int
    elif isinstance(kind, sa.Float) or (isinstance(kind, sa.Numeric) and not kind.asdecimal):
        parse = _to_float
    elif isinstance(kind, sa.Numeric):
        parse = _to_decimal
    elif isinstance(kind, sa.DateTime):
        parse = _iso(dt.datetime)
    elif isinstance(kind, sa.Date):
        parse = _iso(dt.date)
    elif isinstance(kind, sa.Time):
        parse = _iso(dt.time)
    elif isinstance(kind, sa.JSON):
        if not text:
            return lambda value: value
        parse = json.loads
    elif isinstance(kind, sa.Uuid):
        parse = _to_uuid if kind.as_uuid else str
    elif isinstance(kind, sa.LargeBinary):
        parse = _to_bytes
    elif is_string:
        parse = _to_str
    else:
        return lambda value: value

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if text and value == "" and not is_string:
            return None
        return parse(value)

    return convert


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        token = value.strip().lower()
        if token in _TRUE:
            return True
        if token in _FALSE:
            return False
    raise ValueError("expected true/false, yes/no, 1/0")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("not a whole number")
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"{type(value).__name__} is not a number")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    return float(value)


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, (int, str, decimal.Decimal)):
        result = decimal.Decimal(value.strip() if isinstance(value, str) else value)
    elif isinstance(value, float):
        result = decimal.Decimal(repr(value))
    else:
        raise TypeError(f"{type(value).__name__} is not a number")
    if not result.is_finite():
        raise ValueError("not a finite number")
    return result


def _iso(kind: type[Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, kind) and (kind is not dt.date or not isinstance(value, dt.datetime)):
            return value
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
        return kind.fromisoformat(value.strip())

    return parse


def _to_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("\\x"))
    raise TypeError(f"expected hex text, got {type(value).__name__}")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list)):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return str(value)


def _line(where: str) -> int | None:
    tail = where.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


def _resolve_path(path: str | os.PathLike[str], caller: str) -> Path:
    result = Path(path)
    if result.is_absolute():
        return result
    base = Path(caller).parent if caller and not caller.startswith("<") else Path.cwd()
    return (base / result).resolve()
