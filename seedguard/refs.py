"""References by natural key: a data seed's ``refs=`` turned into the keys it writes.

``refs={"role_id": ("roles", "name")}`` says the data's ``role_id`` values are
values of ``roles.name``; what is written is the referenced row's key: the
column ``role_id``'s foreign key points at, or without a foreign key the
target's primary key. Each batch is resolved with one query per reference
(``SELECT name, id FROM roles WHERE name IN (...)``), and values already
resolved in this run are not asked for again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seedguard.errors import DataError, DefinitionError
from seedguard.upsert import TableLike, resolve_table

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

RefSpec = (tuple[TableLike, str | Sequence[str]]
           | tuple[TableLike, str | Sequence[str], Sequence[str]])
"""``(target, natural key)`` or ``(target, natural key columns, data columns)``."""

# Resolved values kept per reference; beyond this the cache starts over (a
# reference into a large table must not grow memory with the data).
_CACHE_MAX = 100_000
_MISSING = object()
_NOT_YET = object()


@dataclass(frozen=True)
class Ref:
    """One reference: ``column`` of the seeded table gets the key of a ``target`` row.

    ``key``: the target's natural-key columns the data names. ``sources``: the
    data columns holding the key's parts, in ``key``'s order; by default the
    one column ``column`` holds the value (a tuple or list for a composite key).
    """

    column: str
    target: TableLike
    target_name: str
    key: tuple[str, ...]
    sources: tuple[str, ...]
    combined: bool  # one data column holds a composite key's whole tuple


def parse_refs(seed: str, refs: Mapping[str, RefSpec] | None) -> tuple[Ref, ...]:
    """``refs=`` checked and normalised; DefinitionError names what is wrong."""
    if not refs:
        return ()
    if not isinstance(refs, Mapping):
        raise DefinitionError(
            f"data seed {seed!r}: refs must map a column to (table, key column), "
            f"not {type(refs).__name__}")
    parsed = []
    for column, spec in refs.items():
        if not isinstance(column, str):
            raise DefinitionError(f"data seed {seed!r}: refs keys are column names, not {column!r}")
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise DefinitionError(
                f"data seed {seed!r}: refs[{column!r}] must be (table, key column) or "
                f"(table, (key columns), (data columns)), not {spec!r}")
        target, key = spec[0], spec[1]
        names = (key,) if isinstance(key, str) else tuple(key)
        if not names or not all(isinstance(n, str) for n in names):
            raise DefinitionError(
                f"data seed {seed!r}: refs[{column!r}] names no key column of the target")
        if len(spec) == 3:
            sources = tuple(spec[2])
            if len(sources) != len(names):
                raise DefinitionError(
                    f"data seed {seed!r}: refs[{column!r}] gives {len(sources)} data columns "
                    f"for the {len(names)} key columns ({', '.join(names)}); give one each")
            combined = False
        else:
            sources = (column,) * len(names) if len(names) > 1 else (column,)
            combined = len(names) > 1
        parsed.append(Ref(column, target, table_name(seed, target), names, sources, combined))
    return tuple(parsed)


def table_name(seed: str, table: TableLike) -> str:
    """The name a Table, a model or a name stands for (for ordering and messages)."""
    import sqlalchemy as sa
    if isinstance(table, str):
        return table
    found = table if isinstance(table, sa.Table) else getattr(table, "__table__", None)
    if not isinstance(found, sa.Table):
        raise DefinitionError(
            f"data seed {seed!r}: a table must be a Table, an ORM model or a table name, "
            f"not {type(table).__name__}")
    return str(found.fullname)


def raw_columns(refs: Iterable[Ref]) -> frozenset[str]:
    """The data columns that hold natural-key values rather than the table's own."""
    return frozenset(c for ref in refs for c in (ref.column, *ref.sources))


class Resolver:
    """Turns a batch's natural-key values into the keys of the referenced rows.

    ``convert_for(target, column)`` gives the converter of a raw value to the
    target column's type (the same conversions as the seeded table's values).
    With ``collect=True`` (a dry run) unresolved references are gathered in
    ``unresolved`` and their rows dropped, instead of raising. ``pending(ref,
    target)``, in a dry run, gives the natural keys that a pending data seed
    of the target would insert: those count as resolved (the row would be
    written, to a key that does not exist yet).
    """

    def __init__(self, conn: Connection, table: sa.Table, refs: Sequence[Ref],
                 convert_for: Callable[[sa.Column[Any]], Callable[[Any], Any]], *,
                 where_path: str, collect: bool = False,
                 pending: Callable[[Ref, sa.Table], set[Any]] | None = None) -> None:
        self.conn = conn
        self.table = table
        self.collect = collect
        self._pending = pending
        self._pending_values: dict[str, set[Any]] = {}
        self.where_path = where_path
        self.unresolved: list[str] = []
        self.unresolved_count = 0
        self._refs = [_Bound(conn, table, ref, convert_for) for ref in refs]

    def resolve(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The rows of ``batch`` ((where, row) pairs) with every reference replaced."""
        rows = [row for _, row in batch]
        bad: set[int] = set()
        # Every reference reads its data columns before any is replaced: two
        # references may share a data column.
        all_values = [bound.values(batch) for bound in self._refs]
        for bound, values in zip(self._refs, all_values, strict=True):
            found = bound.lookup({v for v in values if v is not None})
            ref = bound.ref
            for index, ((where, row), value) in enumerate(zip(batch, values, strict=True)):
                for source in ref.sources:
                    row.pop(source, None)
                if value is None:
                    row[ref.column] = None
                    continue
                target_key = found.get(value, _MISSING)
                if target_key is _MISSING and self._would_be_seeded(bound, value):
                    target_key = _NOT_YET  # compares unequal to any stored key
                if target_key is _MISSING:
                    self._unresolved(where, bound, value)
                    bad.add(index)
                    continue
                row[ref.column] = target_key
        if bad:
            return [row for index, row in enumerate(rows) if index not in bad]
        return rows

    def _would_be_seeded(self, bound: _Bound, value: Any) -> bool:
        if self._pending is None:
            return False
        ref = bound.ref
        values = self._pending_values.get(ref.column)
        if values is None:
            values = self._pending_values[ref.column] = self._pending(ref, bound.target)
        return value in values

    def _unresolved(self, where: str, bound: _Bound, value: Any) -> None:
        ref = bound.ref
        named = ref.key[0] if len(ref.key) == 1 else f"({', '.join(ref.key)})"
        column = ref.column if not ref.sources or ref.combined or ref.sources == (ref.column,) \
            else ", ".join(ref.sources)
        message = (f"{where}: column {column!r}: no {bound.target.fullname} row with {named} "
                   f"{value!r}; fix the value, or seed that row first")
        if not self.collect:
            line = where.rpartition(":")[2]
            raise DataError(message, path=self.where_path,
                            line=int(line) if line.isdigit() else None, column=ref.column)
        self.unresolved_count += 1
        if len(self.unresolved) < 20:
            self.unresolved.append(message)


class _Bound:
    """A reference bound to the database: its target table, key converters and cache."""

    def __init__(self, conn: Connection, table: sa.Table, ref: Ref,
                 convert_for: Callable[[sa.Column[Any]], Callable[[Any], Any]]) -> None:
        self.conn = conn
        self.ref = ref
        target = resolve_table(conn, ref.target)
        self.target = target
        for name in ref.key:
            if name not in target.c:
                raise DataError(
                    f"refs[{ref.column!r}]: {name!r} is not a column of table {target.fullname} "
                    f"(columns: {', '.join(target.c.keys())})", column=ref.column)
        if ref.column not in table.c:
            raise DataError(
                f"refs[{ref.column!r}]: {ref.column!r} is not a column of table {table.fullname} "
                f"(columns: {', '.join(table.c.keys())})", column=ref.column)
        self.written = _referenced_column(table.c[ref.column], target)
        self._converters = [convert_for(target.c[name]) for name in ref.key]
        self._cache: dict[Any, Any] = {}

    def values(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Each row's natural-key value, converted (a tuple for a composite key), or None."""
        ref = self.ref
        convert = self._converters
        out: list[Any] = []
        for where, row in batch:
            try:
                if ref.combined:
                    raw = row.get(ref.column)
                    if raw is None or raw == "":
                        out.append(None)
                        continue
                    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) \
                            or len(raw) != len(ref.key):
                        raise ValueError(
                            f"expected a list of {len(ref.key)} values ({', '.join(ref.key)}); "
                            "in a CSV file, give the parts in columns of their own: "
                            "(table, key columns, data columns)")
                    out.append(tuple(c(v) for c, v in zip(convert, raw, strict=True)))
                elif len(ref.key) == 1:
                    raw = row.get(ref.sources[0])
                    out.append(None if raw is None or raw == "" else convert[0](raw))
                else:
                    raws = [row.get(s) for s in ref.sources]
                    if all(r is None or r == "" for r in raws):
                        out.append(None)
                        continue
                    out.append(tuple(c(r) for c, r in zip(convert, raws, strict=True)))
            except (ValueError, TypeError, ArithmeticError) as err:
                line = where.rpartition(":")[2]
                raise DataError(
                    f"{where}: column {ref.column!r}: cannot read a {self.target.fullname} "
                    f"reference from {row.get(ref.column)!r} ({err}); fix the value",
                    line=int(line) if line.isdigit() else None, column=ref.column,
                ) from err
        return out

    def lookup(self, values: set[Any]) -> dict[Any, Any]:
        """natural key -> referenced key, for the ``values`` that exist (one query)."""
        import sqlalchemy as sa

        cache = self._cache
        wanted = [v for v in values if v not in cache]
        if wanted:
            if len(cache) + len(wanted) > _CACHE_MAX:
                cache.clear()
            target, key = self.target, self.ref.key
            cols = [target.c[c] for c in key]
            for start in range(0, len(wanted), 5000):
                chunk = wanted[start:start + 5000]
                where = cols[0].in_(chunk) if len(cols) == 1 else sa.tuple_(*cols).in_(chunk)
                query = sa.select(*cols, target.c[self.written]).where(where)
                n = len(cols)
                for row in self.conn.execute(query):
                    cache[row[0] if n == 1 else tuple(row[:n])] = row[n]
        return {v: cache[v] for v in values if v in cache}


def _referenced_column(column: sa.Column[Any], target: sa.Table) -> str:
    """What ``column`` stores of a ``target`` row: its foreign key's column, else the
    target's primary key."""
    for fk in column.foreign_keys:
        # By name: the target may be reflected into another MetaData, where
        # fk.column cannot be resolved.
        table_part, _, name = fk.target_fullname.rpartition(".")
        if table_part in (target.fullname, target.name):
            return name
    pk = list(target.primary_key.columns)
    if len(pk) != 1:
        raise DataError(
            f"{column.table.fullname}.{column.name} references {target.fullname}, which has "
            f"{'no' if not pk else 'a composite'} primary key and no foreign key from this "
            "column says which column to store; add a foreign key")
    return str(pk[0].name)
