"""Data seeds: a unit whose work is an upsert of rows from a list or a CSV, JSON or YAML file.

Files are streamed: CSV with :mod:`csv`, JSON (a list of objects) with an
incremental decoder, both in batches of :data:`seedguard.upsert.BATCH_SIZE`
rows, so memory stays flat however large the file is (YAML is parsed whole,
then converted in the same batches). Every value is converted to its
column's type; a value that does not convert raises
:class:`~seedguard.errors.DataError` naming the file, line and column.
Columns named in ``refs=`` hold natural keys of another table's rows and are
resolved per batch by :mod:`seedguard.refs`.

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
from types import FrameType
from typing import TYPE_CHECKING, Any

from seedguard.checksum import data_checksum
from seedguard.errors import DataError, DefinitionError
from seedguard.events import report_progress
from seedguard.refs import Ref, RefSpec, Resolver, parse_refs, raw_columns, table_name
from seedguard.unit import SeedUnit
from seedguard.upsert import (
    BATCH_SIZE,
    TableLike,
    Upserter,
    UpsertResult,
    batches,
    resolve_table,
    unique_column_sets,
)

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from seedguard.journal import Journal
    from seedguard.upsert.core import Difference

_BLOCK = 1 << 20
DATA_SUFFIXES = (".csv", ".json", ".yaml", ".yml")
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
    refs: Mapping[str, RefSpec] | None = None,
    version: int | None = None,
    prune: bool = False,
    contexts: Iterable[str] | None = None,
    after: Iterable[str] = (),
    update: bool | Sequence[str] = True,
    encoding: str = "utf-8-sig",
    description: str | None = None,
    dialects: Iterable[str] | None = None,
) -> SeedUnit:
    """Declare (and register) a unit that upserts ``rows`` or the file at ``path`` by ``key``.

    :param name: the unit's name, as for :func:`seedguard.seed`.
    :param table: a Core ``Table``, an ORM model, or a table name (reflected
        when the unit runs).
    :param key: the column (or list of columns) that identifies a row; it
        needs a primary key or unique index.
    :param rows: the data as a list of dicts; give this or ``path``.
    :param path: a ``.csv`` file with a header row, a ``.json`` file holding a
        list of objects, or a ``.yaml`` / ``.yml`` file holding a list of
        mappings (extra ``seedguard[yaml]``); a relative path is resolved
        against the directory of the file that calls ``data_seed``.
    :param refs: columns whose values name another table's row by natural
        key, ``{"role_id": ("roles", "name")}``; the referenced row's key is
        written (the column the foreign key points at, else the target's
        primary key). The target is a table name, a Table or a model; a
        composite natural key is a tuple of columns, with a list value in the
        data or, as a third item, the data columns holding its parts. A value
        with no such row fails the unit (a DataError naming the file, line and
        column); the unit runs after the data seeds that fill the targets.
    :param version: None: re-apply whenever the data (or these settings) change;
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
    :param dialects: the databases the unit applies to, as for
        :func:`seedguard.seed`; None: every database.
    """
    frame = sys._getframe(1)
    return _declare(frame, name, table=table, key=key, rows=rows, path=path, refs=refs,
                    version=version, prune=prune, contexts=contexts, after=after,
                    update=update, encoding=encoding, description=description,
                    dialects=dialects)


def _declare(
    frame: FrameType,
    name: str,
    *,
    table: TableLike,
    key: str | Sequence[str] | None,
    rows: Iterable[Mapping[str, Any]] | None,
    path: str | os.PathLike[str] | None,
    refs: Mapping[str, RefSpec] | None,
    version: int | None,
    prune: bool,
    contexts: Iterable[str] | None,
    after: Iterable[str],
    update: bool | Sequence[str],
    encoding: str,
    description: str | None,
    reads: Iterable[str] = (),
    dialects: Iterable[str] | None = None,
) -> SeedUnit:
    """data_seed's body, for a caller's ``frame`` (data_dir declares on its caller's behalf)."""
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
    spec = _DataSeed(name, table, key, source, update=update, prune=prune,
                     refs=parse_refs(name, refs))

    def work(session: Session) -> UpsertResult:
        # Returned for a rehearsal (seedguard.plan), which reports its exact counts.
        return spec.run(session.connection(), dry_run=False)

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
        fills=frozenset({spec.table_name}),
        reads=frozenset({ref.target_name for ref in spec.refs} | set(reads)) - {spec.table_name},
        dialects=dialects,
    )
    from seedguard.registry import default_registry

    default_registry.add(unit)
    return unit


class _DataSeed:
    """What a data seed does: convert the source's records and upsert them in batches."""

    def __init__(self, name: str, table: TableLike, key: str | Sequence[str] | None,
                 source: _Source, *, update: bool | Sequence[str], prune: bool,
                 refs: tuple[Ref, ...] = ()) -> None:
        self.name = name
        self.table = table
        self.key = key
        self.source = source
        self.update = update
        self.prune = prune
        self.refs = refs
        self.table_name = table_name(name, table)
        if key is None:
            self.key_text = "its natural key"
        else:
            self.key_text = key if isinstance(key, str) else ", ".join(key)
        self._raw = raw_columns(refs)

    def checksum(self) -> str:
        # What the seed does counts too: another key, refs or prune re-applies it.
        refs = ";".join(f"{r.column}={r.target_name}({','.join(r.key)}<-{','.join(r.sources)})"
                        for r in self.refs)
        header = f"data_seed {self.table_name} key={self.key_text} update={self.update!r} " \
                 f"prune={self.prune}{f' refs={refs}' if refs else ''}\n".encode()
        return data_checksum([header, *self.source.chunks()])

    def preview(self, conn: Connection) -> UpsertResult:
        """What running would do, counted on ``conn`` without writing (dry run).

        References that name no row are listed in ``unresolved`` (their rows
        are not counted) instead of failing the preview.
        """
        try:
            resolve_table(conn, self.table)
            for ref in self.refs:
                resolve_table(conn, ref.target)
        except DataError:
            # A table does not exist yet (an earlier pending unit or the
            # schema migrations create it): every row would be inserted.
            return UpsertResult(inserted=sum(1 for _ in self.source.records()),
                                table_missing=True)
        return self.run(conn, dry_run=True)

    def run(self, conn: Connection, *, dry_run: bool,
            differences: list[Difference] | None = None) -> UpsertResult:
        table = resolve_table(conn, self.table)
        key = self.key if self.key is not None else natural_key(table)
        total = self.source.total()
        from seedguard.journal import current

        # Applied by the runner (not a dry run, a diff or a rehearsal): journaled.
        journal = None if dry_run else current()
        if journal is not None:
            journal.begin(conn, table)
        writer = Upserter(conn, table, key, self.update, dry_run=dry_run, expected=total,
                          differences=differences, journal=journal)
        text = self.source.text
        resolver = Resolver(conn, table, self.refs, lambda c: _converter(c, text=text),
                            where_path=self.source.where_path, collect=dry_run,
                            pending=self._seeded_elsewhere if dry_run else None) \
            if self.refs else None
        keep: set[tuple[Any, ...]] | None = set() if self.prune else None
        done = 0
        for located in batches(self._converted(table), BATCH_SIZE):
            if resolver is not None:
                batch = resolver.resolve(located)
            else:
                batch = [row for _, row in located]
            writer.write(batch)
            if keep is not None:
                keep.update(tuple(row[c] for c in writer.key) for row in batch)
            done += len(located)
            report_progress(done, max(total, done) if total is not None else None)
        writer.finish()
        if keep is not None and not writer.result.table_missing:
            # (A dry run against a table that does not exist yet has nothing to prune.)
            writer.result.deleted = _prune(conn, table, writer.key, keep, dry_run=dry_run,
                                           journal=journal)
        if resolver is not None and resolver.unresolved_count:
            writer.result.unresolved = list(resolver.unresolved)
            if resolver.unresolved_count > len(resolver.unresolved):
                writer.result.unresolved.append(
                    f"... and {resolver.unresolved_count - len(resolver.unresolved)} more")
        return writer.result

    def _seeded_elsewhere(self, ref: Ref, target: sa.Table) -> set[Any]:
        """Dry run: the natural keys ``ref`` reads that declared data seeds of its target hold.

        In a dry run nothing is written, so rows that an earlier pending seed
        would insert are not in the table yet; their references still resolve.
        """
        from seedguard.registry import default_registry

        values: set[Any] = set()
        for unit in default_registry:
            spec = getattr(unit.preview, "__self__", None)
            if not isinstance(spec, _DataSeed) or spec is self or ref.target_name not in unit.fills:
                continue
            if any(c in spec._raw for c in ref.key):
                continue  # the key is itself a reference there: unknown until written
            try:
                for _, row in spec._converted(target):
                    parts = tuple(row.get(c) for c in ref.key)
                    values.add(parts[0] if len(parts) == 1 else parts)
            except DataError:
                continue  # that seed's own run reports its bad data
        return values

    def _converted(self, table: sa.Table) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, row) pairs, each value converted to its column's type.

        The columns ``refs`` reads are left as given: the resolver converts
        them to the types of the target's key columns.
        """
        converters: dict[str, Callable[[Any], Any]] = {}
        raw = self._raw
        text = self.source.text
        for where, record in self.source.records():
            row = {}
            for column, value in record.items():
                if column in raw:
                    row[column] = value
                    continue
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
            yield where, row


def natural_key(table: sa.Table, keys: Mapping[str, str | Sequence[str]] | None = None
                ) -> str | Sequence[str]:
    """The key a table's data is matched by: ``keys[table]``, else its one unique
    constraint besides the primary key, else its primary key."""
    for name in (table.fullname, table.name):
        if keys and name in keys:
            return keys[name]
    primary = frozenset(c.name for c in table.primary_key.columns)
    others: list[frozenset[str]] = []
    for columns in unique_column_sets(table):
        if columns != primary and columns not in others:
            others.append(columns)
    if len(others) == 1:
        return sorted(others[0]) if len(others[0]) > 1 else next(iter(others[0]))
    if len(others) > 1:
        candidates = "; ".join(sorted(" + ".join(sorted(c)) for c in others))
        raise DefinitionError(
            f"table {table.fullname} has several unique keys ({candidates}); say which one "
            f"matches its data: keys={{{table.name!r}: ...}}")
    if primary:
        return sorted(primary) if len(primary) > 1 else next(iter(primary))
    raise DefinitionError(
        f"table {table.fullname} has no primary key or unique constraint to match its data "
        f"by; add one, or name the key: keys={{{table.name!r}: ...}}")


def _prune(conn: Connection, table: sa.Table, key: Sequence[str], keep: set[tuple[Any, ...]],
           *, dry_run: bool, journal: Journal | None = None) -> int:
    """Delete (or count) the rows whose key is not in ``keep``; ``journal`` gets them whole."""
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
            if journal is not None:
                from seedguard.journal import DELETE

                others = [c for c in table.c if c.name not in key]
                rows = conn.execute(sa.select(*cols, *others).where(where)).all()
                n = len(cols)
                journal.record(conn, table, DELETE, key, [c.name for c in others],
                               [r[0] if n == 1 else tuple(r[:n]) for r in rows],
                               before=[r[n] if len(others) == 1 else tuple(r[n:])
                                       for r in rows])
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
        if suffix not in DATA_SUFFIXES:
            raise DefinitionError(
                f"data file {path}: use a .csv file (with a header row), a .json file "
                "(a list of objects) or a .yaml/.yml file (a list of mappings)"
            )
        self.text = suffix == ".csv"
        self.yaml = suffix in (".yaml", ".yml")
        if self.yaml:
            try:
                import yaml  # noqa: F401
            except ImportError as err:
                raise DefinitionError(
                    f"data file {path}: reading YAML needs PyYAML; install the extra: "
                    "pip install 'seedguard[yaml]'"
                ) from err
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
            elif self.yaml:
                yield from self._yaml_records()
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


    def _yaml_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        import yaml

        with open(self.path, encoding=self.encoding) as f:
            loader = yaml.SafeLoader(f)
            try:
                root = loader.get_single_node()
                if root is None:
                    return
                if not isinstance(root, yaml.SequenceNode):
                    raise DataError(
                        f"{self.path}:{root.start_mark.line + 1}: expected a list of mappings; "
                        "the file must hold a YAML list (lines starting with '- ')",
                        path=str(self.path), line=root.start_mark.line + 1)
                # PyYAML has no streaming reader for a list: the node tree is
                # composed whole, but each item is built into a dict on its own.
                for node in root.value:
                    line = node.start_mark.line + 1
                    item = loader.construct_object(node, deep=True)
                    if not isinstance(item, dict):
                        raise DataError(
                            f"{self.path}:{line}: expected a mapping, got "
                            f"{type(item).__name__}; the file must hold a list of mappings",
                            path=str(self.path), line=line)
                    yield f"{self.path}:{line}", item
            except yaml.MarkedYAMLError as err:
                mark = err.problem_mark or err.context_mark
                line = mark.line + 1 if mark is not None else 1
                raise DataError(f"{self.path}:{line}: invalid YAML ({err.problem})",
                                path=str(self.path), line=line) from err
            finally:
                loader.dispose()


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
    read = kind.fromisoformat if sys.version_info >= (3, 11) else _ISO_310[kind]

    def parse(value: Any) -> Any:
        if isinstance(value, kind) and (kind is not dt.date or not isinstance(value, dt.datetime)):
            return value
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
        return read(value.strip())

    return parse


# Python 3.11 reads most of ISO 8601 in fromisoformat (basic format, "Z", week
# dates, any number of fraction digits); 3.10 reads only its own isoformat()
# output. On 3.10 the forms below are parsed here, to the same values.
_DATE = (r"(?P<y>\d{4})(?:-(?P<m>\d{2})-(?P<d>\d{2})|(?P<bm>\d{2})(?P<bd>\d{2})"
         r"|-W(?P<w>\d{2})(?:-(?P<wd>\d))?|W(?P<bw>\d{2})(?P<bwd>\d)?)")
_TIME = (r"(?P<H>\d{2})(?:(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d+))?)?)"
         r"|(?:(?P<bM>\d{2})(?:(?P<bS>\d{2})(?:[.,](?P<bf>\d+))?)?))?")
_ZONE = r"(?P<z>Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?"
_DATE_RE = re.compile(_DATE)
_TIME_RE = re.compile(f"T?{_TIME}{_ZONE}")
_DATETIME_RE = re.compile(f"{_DATE}(?:[Tt ]{_TIME}{_ZONE})?")


def _date_310(text: str) -> dt.date:
    match = _DATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    return _date_of(match)


def _time_310(text: str) -> dt.time:
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    return _time_of(match)


def _datetime_310(text: str) -> dt.datetime:
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    day = _date_of(match)
    if match["H"] is None:
        return dt.datetime(day.year, day.month, day.day)
    return dt.datetime.combine(day, _time_of(match))


def _date_of(match: re.Match[str]) -> dt.date:
    year = int(match["y"])
    week = match["w"] or match["bw"]
    if week is not None:
        return dt.date.fromisocalendar(year, int(week), int(match["wd"] or match["bwd"] or 1))
    return dt.date(year, int(match["m"] or match["bm"]), int(match["d"] or match["bd"]))


def _time_of(match: re.Match[str]) -> dt.time:
    fraction = match["f"] or match["bf"] or ""
    return dt.time(int(match["H"]), int(match["M"] or match["bM"] or 0),
                   int(match["S"] or match["bS"] or 0), int(fraction[:6].ljust(6, "0")),
                   tzinfo=_zone(match["z"]))


def _zone(text: str | None) -> dt.tzinfo | None:
    if text is None:
        return None
    if text == "Z":
        return dt.timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    whole, _, micro = digits.partition(".")
    offset = dt.timedelta(hours=int(whole[:2]), minutes=int(whole[2:4] or 0),
                          seconds=int(whole[4:6] or 0), microseconds=int(micro.ljust(6, "0")))
    return dt.timezone(sign * offset)


_ISO_310: dict[type[Any], Callable[[str], Any]] = {
    dt.date: _date_310, dt.datetime: _datetime_310, dt.time: _time_310,
}


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
