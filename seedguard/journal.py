"""The journal a data seed writes while it applies, for ``seedguard downgrade``.

While a unit runs, the runner opens a :class:`Journal` for it
(:func:`recording`); a data seed's upsert (:mod:`seedguard.upsert.core`) and
prune hand it each written batch: the rows it inserted (their values as
written), the rows it updated (their compared columns before and after) and
the rows it pruned (whole, as they were). Each batch becomes one row of
``<ledger>_journal`` (table ``sg0005``) in the unit's own transaction, so the
journal commits with the work and the ledger row, or not at all.

Values are stored as JSON: what JSON lacks (dates, decimals, UUIDs, bytes)
as text that :func:`seedguard.data.convert.converter` reads back to the column's
type, the same way a data seed reads a JSON file. Not pickle: a database
row is no place to take code from. A value that has no such form (a
column type seedguard does not know) makes that application opaque: the
seed still applies, and ``downgrade`` refuses it, saying why.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    from seedguard.ledger import Ledger
    from seedguard.unit import SeedUnit

BEGIN, INSERT, UPDATE, DELETE, OPAQUE = "begin", "insert", "update", "delete", "opaque"
"""A journal row's ``action``: an application's first row, one per kind of change, or
the reason an application could not be journaled."""


@functools.lru_cache(maxsize=64)  # as Ledger.named: a fleet's schemas are not all kept
def journal_table(name: str, schema: str | None) -> sa.Table:
    """``<ledger>_journal`` as the ``sg0005`` revision creates it."""
    import sqlalchemy as sa

    return sa.Table(
        f"{name}_journal", sa.MetaData(),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("checksum", sa.String(80), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("entries", sa.LargeBinary, nullable=False),
        schema=schema,
    )


def table_for(ledger: Ledger) -> sa.Table:
    return journal_table(ledger.name, ledger.schema)


class Journal:
    """The journal of one application of one unit (name, version, checksum).

    :param ledger: the ledger whose ``_journal`` table receives the rows.
    :param unit: the unit being applied.
    :param checksum: the checksum it is being applied with (the ledger row's).
    """

    def __init__(self, ledger: Ledger, unit: SeedUnit, checksum: str) -> None:
        self.table = table_for(ledger)
        self.name = unit.name
        self.version = unit.version
        self.checksum = checksum
        self.opaque: str | None = None
        self._seq = 0

    def _write(self, conn: Connection, table: sa.Table, action: str, entries: str) -> None:
        if self._seq == 0 and action != BEGIN:
            self._begin(conn, table)
        import zlib

        self._seq += 1
        # Compressed here, fast (level 1): the database then writes a quarter of
        # the bytes, where its own compression of the text cost more than this.
        conn.execute(self.table.insert(), {
            "name": self.name, "version": self.version, "checksum": self.checksum,
            "seq": self._seq, "table_name": table.fullname, "action": action,
            "entries": zlib.compress(entries.encode(), 1)})

    def _begin(self, conn: Connection, table: sa.Table) -> None:
        # An earlier application with the same checksum (applied, forgotten,
        # applied again) left its journal: this application's replaces it.
        t = self.table
        conn.execute(t.delete().where(t.c.name == self.name, t.c.version == self.version,
                                      t.c.checksum == self.checksum))
        self._write(conn, table, BEGIN, "{}")

    def begin(self, conn: Connection, table: sa.Table) -> None:
        """Start the application's journal (an application that changes nothing has one too)."""
        if self._seq == 0:
            self._begin(conn, table)

    def record(self, conn: Connection, table: sa.Table, action: str, key: Sequence[str],
               columns: Sequence[str], keys: Sequence[Any], *,
               before: Sequence[Any] | None = None, after: Sequence[Any] | None = None
               ) -> None:
        """Rows of ``table`` that ``action`` changed, one batch.

        :param action: INSERT (``after`` given), UPDATE (both) or DELETE
            (``before`` given: every other column of the row).
        :param key: the key's column names; ``columns``: the others recorded.
        :param keys: each row's key: a value for one key column, else a tuple.
        :param before: each row's ``columns`` before, shaped like ``keys``.
        :param after: each row's ``columns`` as written, shaped like ``keys``.
        """
        if not keys or self.opaque is not None:
            return
        payload: dict[str, Any] = {"key": list(key), "columns": list(columns), "keys": keys}
        if before is not None:
            payload["before"] = before
        if after is not None:
            payload["after"] = after
        try:
            entries = _encode(payload)
        except (TypeError, ValueError) as err:
            self.opaque = (f"a value in table {table.fullname} has no journal form ({err}), "
                           "so this application's rows are not journaled")
            self._write(conn, table, OPAQUE, _encode({"reason": self.opaque}))
            return
        self._write(conn, table, action, entries)


_active: ContextVar[Journal | None] = ContextVar("seedguard_journal", default=None)


@contextlib.contextmanager
def recording(ledger: Ledger, unit: SeedUnit, checksum: str) -> Iterator[Journal]:
    """Let a data seed running in this context journal what it writes."""
    journal = Journal(ledger, unit, checksum)
    token = _active.set(journal)
    try:
        yield journal
    finally:
        _active.reset(token)


def current() -> Journal | None:
    """The journal of the unit being applied in this context, if any (None in a
    rehearsal, a dry run, or outside seedguard's runner)."""
    return _active.get()


def _plain(value: Any) -> Any:
    # The text data seeds read back to the column's type (seedguard.data.convert.converter).
    # By exact type first: the encoder calls this once per such value.
    plain = _by_type().get(type(value))
    if plain is not None:
        return plain(value)
    import datetime as dt
    import decimal
    import enum
    import uuid

    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, enum.Enum):
        return value.name  # what SQLAlchemy's Enum stores
    raise TypeError(f"{type(value).__name__} values cannot be journaled")


@functools.cache
def _by_type() -> dict[type[Any], Any]:
    # Imported here: the runner imports this module for every start-up, and
    # only a data seed with such values needs them. str() of a date, time,
    # datetime (with a space, which fromisoformat reads), Decimal or UUID is
    # what the converters read back.
    import datetime as dt
    import decimal
    import uuid

    return {decimal.Decimal: str, dt.date: str, dt.datetime: str, dt.time: str,
            uuid.UUID: str, bytes: bytes.hex}


@functools.cache
def _encoder() -> Any:
    import json

    return json.JSONEncoder(default=_plain, separators=(",", ":"), ensure_ascii=False,
                            check_circular=False).encode


def _encode(payload: Any) -> str:
    result: str = _encoder()(payload)
    return result


def decode(entries: bytes) -> dict[str, Any]:
    """A journal row's ``entries``, as :class:`Journal` wrote them."""
    import json
    import zlib

    result: dict[str, Any] = json.loads(zlib.decompress(entries))
    return result
