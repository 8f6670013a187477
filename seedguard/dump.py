"""``seedguard dump``: tables written as data seed files that ``data_dir`` applies back.

Each table becomes ``<out>/<table>.json|csv|yaml``, one record per row, ordered
by its natural key. What is written is what :mod:`seedguard.data` reads back
to the same values: dates and times in ISO 8601, decimals as text (no float
rounding), binary as hex, JSON columns as JSON. A column named in ``refs`` is
written as the referenced row's natural key (``role_id`` holds ``"admin"``,
not ``3``), found by an outer join in the same query; a table's own
auto-incremented primary key is left out unless it is the key, so a fresh
database numbers its rows itself and the refs find them there.

Rows are streamed (``stream_results``: a server-side cursor on PostgreSQL, an
unbuffered one on MySQL/MariaDB) in partitions of :data:`BATCH` rows and
written as they come, so memory stays flat however large the table is. Each
file is written beside its final name and renamed into place when complete.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from seedguard.bydialect import ByDialect, Registry
from seedguard.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from seedguard.admin import Bind

BATCH = 10_000
FORMATS = ("json", "csv", "yaml")
EXPORTERS: Registry[Exporter] = Registry("dump exporter", lazy={
    # Imported on a PostgreSQL dump's first use (it needs psycopg's COPY).
    "postgresql": "seedguard.dump_postgresql",
})
Progress = Callable[[str, int, "int | None"], None]
"""Called as ``progress(table, rows written so far, rows in total)`` after each partition."""


@dataclass
class DumpedFile:
    """One file written: the table, its path, how many rows."""

    table: str
    path: Path
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "path": str(self.path), "rows": self.rows}


@dataclass
class DumpResult:
    """What :func:`dump` wrote, and the ``data_dir`` call that applies it back.

    ``keys`` and ``refs`` are in ``data_dir``'s form; ``warnings`` name
    foreign keys written as raw values (no ``refs`` given for them).
    """

    out: Path
    files: list[DumpedFile] = field(default_factory=list)
    keys: dict[str, list[str]] = field(default_factory=dict)
    refs: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def data_dir_call(self) -> str:
        """The Python line that declares these files as data seeds."""
        keys = {t: k[0] if len(k) == 1 else k for t, k in self.keys.items()}
        call = f"seedguard.data_dir({str(self.out)!r}, keys={keys!r}"
        if self.refs:
            call += f", refs={self.refs!r}"
        return call + ")"

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": [f.as_dict() for f in self.files],
                "keys": self.keys, "refs": {t: {c: list(r) for c, r in refs.items()}
                                            for t, refs in self.refs.items()},
                "warnings": list(self.warnings), "data_dir": self.data_dir_call()}


def dump(
    bind: Bind,
    tables: Sequence[str],
    *,
    key: str | Sequence[str] | Mapping[str, str | Sequence[str]],
    refs: Mapping[str, tuple[str, str]] | None = None,
    format: str = "json",
    out: str | os.PathLike[str] = ".",
    where: str | None = None,
    progress: Progress | None = None,
) -> DumpResult:
    """Write each of ``tables`` to ``out`` as a data seed file keyed by ``key``.

    Every table, key column and reference is checked first: bad input is a
    ConfigError before any file is written.

    :param bind: an ``Engine``, a URL, or None (the configured database).
    :param tables: the tables to dump (``schema.table`` for another schema).
    :param key: the natural key of every table (a column or a list of them),
        or a mapping table -> key; it needs a primary key or unique constraint.
    :param refs: ``{"role_id": ("roles", "name")}``: write ``role_id`` as the
        ``name`` of the ``roles`` row it points at; ``"users.role_id"`` limits
        it to one table.
    :param format: ``"json"`` (default), ``"csv"`` or ``"yaml"`` (extra
        ``seedguard[yaml]``). CSV cannot tell NULL from an empty string in a
        text column, so such a NULL is a ConfigError: use JSON or YAML.
    :param out: the directory to write into (created if missing).
    :param where: a SQL condition every dumped row meets, e.g.
        ``"tenant_id = 7"`` (the operator's own SQL, used as it is).
    :param progress: called after each partition of rows (see :data:`Progress`).
    """
    from seedguard.admin import _settings
    from seedguard.connect import connect, read_only_engine

    if format not in FORMATS:
        raise ConfigError(f"dump: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if not tables:
        raise ConfigError("dump: name at least one table")
    if format == "yaml":
        _yaml()
    folder = Path(out)
    settings = _settings(bind)
    result = DumpResult(out=folder)
    with read_only_engine(settings) as engine, connect(engine) as conn:
        plans = [_Plan.make(conn, name, key, refs or {}, where) for name in tables]
        _check_refs_used(plans, refs or {})
        for plan in plans:
            existing = [folder / f"{plan.stem}.{ext}" for ext in ("json", "csv", "yaml", "yml")
                        if ext != format and (folder / f"{plan.stem}.{ext}").exists()]
            if existing:
                raise ConfigError(
                    f"dump: {existing[0]} exists and fills the same table as the "
                    f"{format} file dump would write; remove it, or dump --format "
                    f"{existing[0].suffix[1:]}")
        folder.mkdir(parents=True, exist_ok=True)
        for plan in plans:
            result.keys[plan.stem] = list(plan.key)
            if plan.refs:
                result.refs[plan.stem] = dict(plan.refs)
            result.warnings.extend(plan.warnings)
            path = folder / f"{plan.stem}.{format}"
            rows = _write(conn, plan, path, format, progress)
            result.files.append(DumpedFile(plan.stem, path, rows))
    return result


@dataclass
class _Plan:
    """One table's dump: the query and what to tell about it."""

    stem: str
    table: sa.Table
    key: tuple[str, ...]
    refs: dict[str, tuple[str, str]]
    query: sa.Select[Any]
    text_columns: frozenset[str]
    json_columns: frozenset[str]
    binary_columns: frozenset[str]
    warnings: list[str]

    @classmethod
    def make(cls, conn: Connection, name: str,
             key: str | Sequence[str] | Mapping[str, str | Sequence[str]],
             refs: Mapping[str, tuple[str, str]], where: str | None) -> _Plan:
        import sqlalchemy as sa

        from seedguard.refs import _referenced_column
        from seedguard.upsert import unique_column_sets

        table = _reflect(conn, name, what="dump")
        if isinstance(key, Mapping):
            if name not in key:
                raise ConfigError(f"dump: no key given for table {name!r}; add --key {name}=COL")
            chosen = key[name]
        else:
            chosen = key
        columns = (chosen,) if isinstance(chosen, str) else tuple(chosen)
        missing = [c for c in columns if c not in table.c]
        if not columns or missing:
            raise ConfigError(
                f"dump: table {name} has no column {', '.join(map(repr, missing)) or '(none)'} "
                f"for its key (columns: {', '.join(table.c.keys())}); fix --key")
        if frozenset(columns) not in unique_column_sets(table):
            raise ConfigError(
                f"dump: the key {', '.join(columns)} of table {name} has no primary key or "
                "unique constraint, which data_dir needs to match the rows by; choose a unique "
                "key, or add the constraint")
        mine: dict[str, tuple[str, str]] = {}
        for spec, pointed in refs.items():
            owner, _, ref_column = spec.rpartition(".")
            if owner and owner not in (name, table.name):
                continue
            if ref_column not in table.c:
                if owner:
                    raise ConfigError(
                        f"dump: --refs {spec}: table {name} has no column {ref_column!r} "
                        f"(columns: {', '.join(table.c.keys())})")
                continue
            mine[ref_column] = pointed
        drop = table.autoincrement_column
        source: Any = table
        if where:
            source = sa.select(table).where(sa.text(f"({where})")).subquery("dumped")
        selected: list[Any] = []
        joined: Any = source
        warnings = []
        for index, column in enumerate(table.columns):
            if column.computed is not None:
                continue  # generated by the database
            if drop is not None and column is drop and column.name not in columns:
                continue  # a fresh database numbers the rows itself
            if column.name in mine:
                target_name, target_key = mine[column.name]
                target = _reflect(conn, target_name, what=f"--refs {column.name}")
                if target_key not in target.c:
                    raise ConfigError(
                        f"dump: --refs {column.name}={target_name}.{target_key}: table "
                        f"{target_name} has no column {target_key!r} "
                        f"(columns: {', '.join(target.c.keys())})")
                try:
                    stored = _referenced_column(column, target)
                except Exception as err:
                    raise ConfigError(f"dump: --refs {column.name}: {err}") from err
                alias = target.alias(f"ref{index}")
                joined = joined.outerjoin(alias, source.c[column.name] == alias.c[stored])
                selected.append(alias.c[target_key].label(column.name))
                continue
            for fk in column.foreign_keys:
                warnings.append(
                    f"{name}.{column.name} is a foreign key to {fk.target_fullname}, written as "
                    f"it is: on a fresh database the ids may differ; give --refs "
                    f"{column.name}={fk.target_fullname.rpartition('.')[0]}.KEY to write the "
                    "referenced row's natural key")
                break
            selected.append(source.c[column.name])
        query = sa.select(*selected).select_from(joined) \
            .order_by(*[source.c[c] for c in columns])
        text_columns = frozenset(c.name for c in table.columns
                                 if isinstance(c.type, sa.String) and c.name not in mine)
        json_columns = frozenset(c.name for c in table.columns if isinstance(c.type, sa.JSON))
        binary_columns = frozenset(c.name for c in table.columns
                                   if isinstance(c.type, sa.LargeBinary))
        return cls(table.fullname if table.schema else table.name, table, columns, mine,
                   query, text_columns, json_columns, binary_columns, warnings)


def _reflect(conn: Connection, name: str, *, what: str) -> sa.Table:
    import sqlalchemy as sa

    schema, _, bare = name.rpartition(".")
    try:
        return sa.Table(bare, sa.MetaData(), schema=schema or None, autoload_with=conn)
    except sa.exc.NoSuchTableError as err:
        raise ConfigError(
            f"{what}: no table {name!r} in the database; check the name "
            "(schema.table for another schema)") from err


def _check_refs_used(plans: Iterable[_Plan], refs: Mapping[str, tuple[str, str]]) -> None:
    used = {column for plan in plans for column in plan.refs}
    for spec, target in refs.items():
        if not (isinstance(target, tuple) and len(target) == 2):
            raise ConfigError(f"dump: refs[{spec!r}] must be (table, key column), not {target!r}")
        if spec.rpartition(".")[2] not in used:
            raise ConfigError(
                f"dump: --refs {spec}: no dumped table has column {spec.rpartition('.')[2]!r}")


class Exporter(ByDialect):
    """How a database hands a table's rows to :func:`dump`: one class per dialect.

    The base streams rows through the driver and converts them in Python; a
    dialect whose server can write the JSON records itself overrides
    :meth:`json_records`.
    """

    registry = EXPORTERS

    def json_records(self, conn: Connection, plan: _Plan) -> Iterator[list[str]] | None:
        """The rows of ``plan`` as JSON objects in text, in partitions, in key order;
        None when this database cannot produce them for this plan (the rows are then
        streamed and converted in Python)."""
        return None


def _exporter(conn: Connection) -> Exporter:
    return (EXPORTERS.get(conn.dialect.name) or Exporter)()


def _write(conn: Connection, plan: _Plan, path: Path, format: str,
           progress: Progress | None) -> int:
    import sqlalchemy as sa

    # The total is for progress only; counting is a scan of its own.
    total = conn.execute(sa.select(sa.func.count()).select_from(plan.query.subquery())
                         ).scalar() if progress is not None else None
    part = path.with_name(path.name + ".part")
    done = 0
    try:
        with part.open("w", encoding="utf-8", newline="") as handle:
            writer = _WRITERS[format](handle, plan)
            records = _exporter(conn).json_records(conn, plan) if format == "json" else None
            if records is not None:
                assert isinstance(writer, _Json)
                for texts in records:
                    writer.texts(texts)
                    done += len(texts)
                    if progress is not None:
                        progress(plan.stem, done, total)
                writer.close()
            else:
                done = _stream(conn, plan, writer, progress, total)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if progress is not None and done == 0:
        progress(plan.stem, 0, total)
    return done


def _stream(conn: Connection, plan: _Plan, writer: _Writer, progress: Progress | None,
            total: int | None) -> int:
    """Rows streamed through the driver, converted in Python, written by ``writer``."""
    done = 0
    streamed = conn.execution_options(stream_results=True, yield_per=BATCH)
    result = streamed.execute(plan.query)
    try:
        columns = result.keys()
        names = [str(name) for name in columns]  # not quoted_name: YAML wants str
        # One converter per column, chosen by its type once (a value
        # at a time through _plain's tests was most of a dump's time).
        convert = [(name, fn) for name, fn in zip(
            names, map(_converter_for, plan.query.selected_columns), strict=True)
            if fn is not None]
        for rows in result.partitions():
            records = []
            for row in rows:
                record = dict(zip(names, row, strict=True))
                for name, fn in convert:
                    value = record[name]
                    if value is not None:
                        record[name] = fn(value)
                records.append(record)
            writer.rows(records)
            done += len(rows)
            if progress is not None:
                progress(plan.stem, done, total)
    finally:
        result.close()  # a server-side cursor left open on an error
    writer.close()
    return done


def _converter_for(column: Any) -> Callable[[Any], Any] | None:
    """How a column's values are written: None (as they are) for text, numbers and
    booleans, which JSON, CSV and YAML hold; :func:`_plain` for the rest."""
    import sqlalchemy as sa

    kind = column.type
    if isinstance(kind, (sa.String, sa.Boolean, sa.Float)) and not isinstance(kind, sa.Enum):
        return None
    if isinstance(kind, sa.Integer):
        return None
    if isinstance(kind, sa.Numeric) and kind.asdecimal:
        return str  # text: a JSON number would be read back as a float
    if isinstance(kind, (sa.Date, sa.DateTime, sa.Time)):
        return _isoformat
    return _plain


def _isoformat(value: Any) -> Any:
    # A driver may hand back text for a date it cannot represent (SQLite).
    return value.isoformat() if hasattr(value, "isoformat") else _plain(value)


def _plain(value: Any) -> Any:
    """A value as data.py reads it back to the same value."""
    if value is None or isinstance(value, (bool, int, float, str, dict, list)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)  # text: a JSON number would be read as a float
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


class _Writer:
    def __init__(self, handle: IO[str], plan: _Plan) -> None:
        self.handle = handle
        self.plan = plan

    def rows(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Json(_Writer):
    def __init__(self, handle: IO[str], plan: _Plan) -> None:
        super().__init__(handle, plan)
        self.first = True
        # One encoder: json.dumps(..., ensure_ascii=False) builds one per call.
        self.encode = json.JSONEncoder(ensure_ascii=False).encode
        handle.write("[")

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.handle.write("\n  " if self.first else ",\n  ")
        self.first = False
        self.handle.write(",\n  ".join(map(self.encode, rows)))

    def texts(self, records: list[str]) -> None:
        """Records already written as JSON objects (by the database)."""
        if not records:
            return
        self.handle.write("\n  " if self.first else ",\n  ")
        self.first = False
        self.handle.write(",\n  ".join(records))

    def close(self) -> None:
        self.handle.write("]\n" if self.first else "\n]\n")


class _Csv(_Writer):
    def __init__(self, handle: IO[str], plan: _Plan) -> None:
        super().__init__(handle, plan)
        self.writer: Any = None

    def rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.row(row)

    def row(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = csv.DictWriter(self.handle, fieldnames=list(row))
            self.writer.writeheader()
        for name, value in row.items():
            if value is None and name in self.plan.text_columns:
                raise ConfigError(
                    f"dump: {self.plan.stem}.{name} holds NULL, which a CSV file cannot tell "
                    "from an empty string; dump it with --format json or yaml")
            if isinstance(value, bool):
                row[name] = "true" if value else "false"
            elif name in self.plan.json_columns and value is not None:
                row[name] = json.dumps(value, ensure_ascii=False)
            elif name in self.plan.binary_columns and value is not None:
                # "\x" first: an empty field is NULL, and b"" must stay b"".
                row[name] = "\\x" + value
        self.writer.writerow(row)

    def close(self) -> None:
        if self.writer is None:  # no rows: the header alone
            names = [c.name for c in self.plan.query.selected_columns]
            csv.writer(self.handle).writerow(names)


class _Yaml(_Writer):
    def __init__(self, handle: IO[str], plan: _Plan) -> None:
        super().__init__(handle, plan)
        yaml = _yaml()
        self.dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        self.yaml = yaml
        self.empty = True

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        # A partition at a time: the lists concatenated are one YAML list.
        self.handle.write(self.yaml.dump(rows, Dumper=self.dumper, sort_keys=False,
                                         allow_unicode=True, default_flow_style=False))
        self.empty = False

    def close(self) -> None:
        if self.empty:
            self.handle.write("[]\n")


_WRITERS: dict[str, Callable[[IO[str], _Plan], _Writer]] = {
    "json": _Json, "csv": _Csv, "yaml": _Yaml,
}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as err:
        raise ConfigError("dump --format yaml needs PyYAML: pip install 'seedguard[yaml]'") \
            from err
    return yaml


def parse_keys(values: Iterable[str]) -> str | list[str] | dict[str, str | list[str]]:
    """``--key`` values: ``COL[,COL]`` for every table, or ``TABLE=COL[,COL]`` each."""
    common: list[str] | None = None
    per_table: dict[str, str | list[str]] = {}
    for value in values:
        table, sep, columns = value.rpartition("=")
        parts = [c.strip() for c in columns.split(",") if c.strip()]
        if not parts:
            raise ConfigError(f"--key {value!r}: name a column")
        if sep:
            per_table[table] = parts[0] if len(parts) == 1 else parts
        elif common is not None:
            raise ConfigError("--key COL is given twice; use --key TABLE=COL for each table")
        else:
            common = parts
    if per_table:
        if common is not None:
            raise ConfigError("--key: give either one COL for every table, or TABLE=COL each")
        return per_table
    assert common is not None
    return common[0] if len(common) == 1 else common


def parse_refs(values: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``--refs`` values: ``COL=TABLE.KEY`` or ``TABLE.COL=TARGET.KEY``."""
    refs: dict[str, tuple[str, str]] = {}
    for value in values:
        column, sep, target = value.partition("=")
        table, dot, key = target.rpartition(".")
        if not (sep and dot and column and table and key):
            raise ConfigError(f"--refs {value!r}: write COL=TABLE.KEY, e.g. role_id=roles.name")
        refs[column] = (table, key)
    return refs


def progress_printer(stream: IO[str], *, tty: bool) -> Progress:
    """A progress callback that shows ``dumping TABLE: done/total rows`` on ``stream``:
    redrawn in place on a terminal, else a line per million rows and one at the end."""
    last: dict[str, int] = {}

    def show(table: str, done: int, total: int | None) -> None:
        of = f"/{total}" if total is not None else ""
        if tty:
            stream.write(f"\rdumping {table}: {done}{of} rows")
            if done == total:
                stream.write("\n")
            stream.flush()
        elif done == total or done - last.get(table, 0) >= 100 * BATCH:
            last[table] = done
            stream.write(f"dumping {table}: {done}{of} rows\n")

    return show
