"""``seedguard downgrade NAME``: undo a data seed's last application, exactly, from its journal.

The journal (:mod:`seedguard.journal`) holds what the application inserted,
updated and pruned. Under the same locks as ``upgrade``, in one transaction:

1. Every journaled row is compared with the table now: an inserted or
   updated row must still hold the values the seed wrote, a pruned row must
   still be absent. Any other row refuses the whole downgrade
   (:class:`DowngradeRefused`, listing those rows by key) and nothing is
   changed; there is no ``--force``: the rows are someone else's now.
2. Inserted rows are deleted, updated rows get their earlier values back,
   pruned rows are inserted again whole.
3. The application's journal is removed and its ledger row undone: a row
   that replaced earlier data of the same version (``superseded``) goes back
   to the checksum before, any other row is removed. Either way the unit is
   pending again, and ``upgrade`` applies it again.

A code unit's rows are unknown to seedguard: it cannot be downgraded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError, DowngradeRefused, SeedguardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.api import Bind
    from seedguard.ledger import Ledger, LedgerRow
    from seedguard.registry import SeedsSpec

_CHUNK = 1000
"""Keys per statement when reading and restoring rows."""


@dataclass(frozen=True)
class ChangedRow:
    """A journaled row that is no longer as the seed left it.

    ``state``: ``"changed"`` (``columns`` maps each column to ``(as seeded,
    now)``), ``"deleted"`` (the seed wrote it, it is gone) or ``"recreated"``
    (the seed pruned it, a row of that key is back).
    """

    table: str
    key: Any
    state: str
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        key = list(self.key) if isinstance(self.key, tuple) else self.key
        return {"table": self.table, "key": key, "state": self.state,
                "columns": {name: {"seeded": seeded, "now": now}
                            for name, (seeded, now) in self.columns.items()}}


@dataclass
class DowngradeResult:
    """What :func:`downgrade` did.

    ``action``: ``"downgraded"``, or ``"unchanged"`` when no version of the
    unit was applied. ``deleted``, ``restored`` and ``reinserted`` count the
    rows the application had inserted, updated and pruned. ``ledger``:
    ``"removed"`` (the version's row) or ``"reverted"`` (to the checksum it
    replaced, in ``checksum``).
    """

    name: str
    action: str
    version: int | None = None
    deleted: int = 0
    restored: int = 0
    reinserted: int = 0
    ledger: str | None = None
    checksum: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "version": self.version,
                "deleted": self.deleted, "restored": self.restored,
                "reinserted": self.reinserted, "ledger": self.ledger,
                "checksum": self.checksum}


def downgrade(bind: Bind, name: str, *, seeds: SeedsSpec = None,
              bind_key: str | None = None) -> DowngradeResult:
    """Undo the last application of the data seed ``name``, exactly, or change nothing.

    :param bind: an ``Engine``, a URL, or None (the configured database).
    :param name: the data seed's name.
    :param seeds: the seeds that declare it, as for :func:`seedguard.apply`.
    :param bind_key: the Flask-SQLAlchemy bind it is on, as for
        :func:`seedguard.api.stamp`: inside an app context the seed is undone in
        its own bind's database, under that database's locks.

    Raises :class:`DowngradeRefused` when a row it wrote changed since,
    :class:`~seedguard.ConfigError` for a code unit, an unknown name, or an
    application without a journal (applied before seedguard kept one, or
    stamped), and :class:`~seedguard.LockTimeout` as ``upgrade`` does.
    """
    from seedguard.admin import _ledger_locked, _no_such_unit, _settings, unit_home
    from seedguard.data import DataSeed

    unit, settings = unit_home(_settings(bind, seeds=seeds), name, bind_key=bind_key)
    if unit is not None and not isinstance(getattr(unit.preview, "__self__", None), DataSeed):
        raise ConfigError(
            f"{name!r} is a code unit: seedguard does not know which rows it wrote, so it "
            "cannot downgrade it (a data seed can be); undo its work yourself, then run "
            f"`seedguard forget {name}` to make it pending again")
    with _ledger_locked(settings) as (conn, ledger):
        rows = [row for row in ledger.read_current(conn).rows() if row.name == name]
        if not rows:
            if unit is None:
                raise _no_such_unit(name, settings)
            return DowngradeResult(name, "unchanged")
        row = max(rows, key=lambda r: r.version)
        if row.status != "applied":
            raise ConfigError(
                f"unit {name!r} v{row.version} is {row.status}, not applied; settle it first "
                f"with `seedguard resolve {name} --applied` or `--retry`")
        result = _undo(conn, ledger, row)
    return result


def _undo(conn: Connection, ledger: Ledger, row: LedgerRow) -> DowngradeResult:
    import sqlalchemy as sa

    from seedguard.journal import BEGIN, OPAQUE, decode, table_for

    journal = table_for(ledger)
    where = (journal.c.name == row.name, journal.c.version == row.version,
             journal.c.checksum == (row.checksum or ""))
    entries = conn.execute(sa.select(journal.c.table_name, journal.c.action,
                                     journal.c.entries).where(*where)
                           .order_by(journal.c.seq)).all()
    if not any(action == BEGIN for _, action, _ in entries):
        raise ConfigError(
            f"unit {row.name!r} v{row.version} has no journal: it was applied before this "
            "seedguard kept journals, stamped, or is not a data seed, so the rows it wrote "
            f"are unknown; undo them yourself, then run `seedguard forget {row.name} "
            f"--version {row.version}`")
    for _, action, text in entries:
        if action == OPAQUE:
            raise ConfigError(f"unit {row.name!r} v{row.version} cannot be downgraded: "
                              f"{decode(text)['reason']}")
    tables: dict[str, _TableUndo] = {}
    for table_name, action, text in entries:
        if action == BEGIN:
            continue
        undo = tables.get(table_name)
        if undo is None:
            undo = tables[table_name] = _TableUndo(conn, table_name)
        undo.add(action, decode(text))
    changed = [item for undo in tables.values() for item in undo.check()]
    if changed:
        shown = "; ".join(_describe(item) for item in changed[:10])
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        raise DowngradeRefused(
            f"unit {row.name!r} v{row.version}: {len(changed)} row(s) it wrote changed since "
            f"({shown}{more}); nothing was changed. Put them back as seeded, or leave the "
            "seed applied", name=row.name, rows=changed)
    result = DowngradeResult(row.name, "downgraded", row.version)
    for undo in tables.values():
        deleted, restored, reinserted = undo.restore()
        result.deleted += deleted
        result.restored += restored
        result.reinserted += reinserted
    conn.execute(journal.delete().where(*where))
    result.ledger, result.checksum = ledger.recorder.unrecord(conn, row)
    return result


def _describe(item: ChangedRow) -> str:
    where = f"{item.table} {item.key!r}"
    if item.state != "changed":
        return f"{where} {item.state}"
    return where + " " + ", ".join(f"{column} {seeded!r} -> {now!r}"
                                   for column, (seeded, now) in item.columns.items())


class _TableUndo:
    """What one application did to one table, per key, and how to take it back.

    Entries are applied in journal order: a key written twice (twice in the
    data, or by two batches) keeps its first ``before`` and its last ``after``.
    """

    def __init__(self, conn: Connection, name: str) -> None:
        from seedguard.upsert.core import resolve_table

        self.conn = conn
        self.table = resolve_table(conn, name)
        self.key: tuple[str, ...] = ()
        # key -> [first action, values before (None: absent), values after (None: absent)]
        self.rows: dict[Any, list[Any]] = {}
        self._convert: dict[str, Any] = {}

    def _converter(self, column: str) -> Any:
        convert = self._convert.get(column)
        if convert is None:
            import sqlalchemy as sa

            from seedguard.data.convert import _to_bytes, converter

            kind = self.table.c[column].type
            # MySQL/MariaDB reflect BINARY/VARBINARY as binary types that are not
            # LargeBinary, which the data seeds' converter knows; the journal
            # holds every binary value as hex.
            binary = isinstance(kind, sa.types._Binary) and not isinstance(kind, sa.LargeBinary)
            convert = self._convert[column] = _to_bytes if binary else converter(
                self.table.c[column], text=False)
        return convert

    def add(self, action: str, payload: dict[str, Any]) -> None:
        from seedguard.journal import DELETE, INSERT, UPDATE

        key, columns = tuple(payload["key"]), list(payload["columns"])
        self.key = key
        if action not in (INSERT, UPDATE, DELETE):
            raise SeedguardError(f"journal of {self.table.fullname}: unknown action "
                                 f"{action!r} (written by a newer seedguard?)")
        key_of = [self._converter(c) for c in key]
        value_of = [self._converter(c) for c in columns]

        keys = payload["keys"]

        def values(items: list[Any] | None) -> list[dict[str, Any]]:
            # One column is recorded as its value, several as a list (the getters'
            # shapes); none (a table of key columns only) as nothing.
            if items is None:
                return [{} for _ in keys]
            if len(columns) == 1:
                items = [[item] for item in items]
            return [{c: convert(v) for c, convert, v in zip(columns, value_of, item,
                                                            strict=True)}
                    for item in items]

        nothing: list[dict[str, Any] | None] = [None] * len(keys)
        befores = nothing if action == INSERT else values(payload.get("before"))
        afters = nothing if action == DELETE else values(payload.get("after"))
        for raw, before, after in zip(keys, befores, afters, strict=True):
            parts = [raw] if len(key) == 1 else raw
            k = tuple(convert(v) for convert, v in zip(key_of, parts, strict=True))
            seen = self.rows.get(k)
            if seen is None:
                self.rows[k] = [action, before, after]
            elif after is None or seen[2] is None:
                seen[2] = after
            else:
                seen[2] = {**seen[2], **after}

    def _current(self, keys: Sequence[Any], columns: Sequence[str]) -> dict[Any, tuple[Any, ...]]:
        """The rows of ``keys`` now: key -> values of ``columns``."""
        import sqlalchemy as sa

        table, n = self.table, len(self.key)
        cols = [table.c[c] for c in (*self.key, *columns)]
        found: dict[Any, tuple[Any, ...]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start:start + _CHUNK])
            for row in self.conn.execute(sa.select(*cols).where(self._where(chunk))):
                found[tuple(row[:n])] = tuple(row[n:])
        return found

    def _where(self, keys: list[tuple[Any, ...]]) -> Any:
        import sqlalchemy as sa

        table = self.table
        if len(self.key) == 1:
            return table.c[self.key[0]].in_([k[0] for k in keys])
        return sa.tuple_(*(table.c[c] for c in self.key)).in_(keys)

    def check(self) -> list[ChangedRow]:
        """The rows no longer as the application left them."""
        columns = sorted({c for _, _, after in self.rows.values() if after for c in after})
        now = self._current(list(self.rows), columns)
        changed = []
        for k, (_, _, after) in self.rows.items():
            shown = k[0] if len(k) == 1 else k
            current = now.get(k)
            if after is None:
                if current is not None:
                    changed.append(ChangedRow(self.table.fullname, shown, "recreated"))
                continue
            if current is None:
                changed.append(ChangedRow(self.table.fullname, shown, "deleted"))
                continue
            values = dict(zip(columns, current, strict=True))
            differs = {c: (v, values[c]) for c, v in after.items() if values[c] != v}
            if differs:
                changed.append(ChangedRow(self.table.fullname, shown, "changed", differs))
        return changed

    def restore(self) -> tuple[int, int, int]:
        """Delete what was inserted, put back what was updated and pruned."""
        import sqlalchemy as sa

        table, conn = self.table, self.conn
        inserted = [k for k, (_, before, _) in self.rows.items() if before is None]
        updated = [(k, before) for k, (action, before, _) in self.rows.items()
                   if before is not None and action != "delete"]
        pruned = [(k, before) for k, (action, before, _) in self.rows.items()
                  if action == "delete"]
        for start in range(0, len(inserted), _CHUNK):
            conn.execute(table.delete().where(self._where(inserted[start:start + _CHUNK])))
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for k, before in updated:
            params = {f"sg_key_{i}": v for i, v in enumerate(k)}
            params.update({f"sg_value_{c}": v for c, v in before.items()})
            by_columns.setdefault(tuple(before), []).append(params)
        for columns, batch in by_columns.items():
            statement = table.update().where(
                *(table.c[c] == sa.bindparam(f"sg_key_{i}") for i, c in enumerate(self.key))
            ).values({c: sa.bindparam(f"sg_value_{c}") for c in columns})
            conn.execute(statement, batch)
        if pruned:
            conn.execute(table.insert(), [{**dict(zip(self.key, k, strict=True)), **before}
                                          for k, before in pruned])
        return len(inserted), len(updated), len(pruned)

