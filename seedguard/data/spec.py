"""What a data seed does: convert its source's records and upsert them by key, in batches.

Batches of :data:`BATCH_SIZE` rows; every value is converted to its column's
type (:mod:`seedguard.data.convert`); columns named in ``refs=`` hold natural
keys of another table's rows and are resolved per batch by
:mod:`seedguard.refs`; ``prune`` deletes the rows whose key is not in the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seedguard.checksum import data_checksum
from seedguard.data.convert import converter
from seedguard.errors import DataError, DefinitionError
from seedguard.events import report_progress
from seedguard.refs import Ref, Resolver, raw_columns, table_name
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

    from seedguard.data.sources import Source
    from seedguard.journal import Journal
    from seedguard.upsert.core import Difference


class DataSeed:
    """What a data seed does: convert the source's records and upsert them in batches."""

    def __init__(self, name: str, table: TableLike, key: str | Sequence[str] | None,
                 source: Source, *, update: bool | Sequence[str], prune: bool,
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
        resolver = Resolver(conn, table, self.refs, lambda c: converter(c, text=text),
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
            if not isinstance(spec, DataSeed) or spec is self or ref.target_name not in unit.fills:
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
                    convert = converters[column] = converter(table.c[column], text=text)
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



def _line(where: str) -> int | None:
    tail = where.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None

