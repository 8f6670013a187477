"""Reading the ledger: its rows, its revision, and the lock-free comparison with the units.

The fast path selects every column of the ledger together with the ledger's
revision, so one query tells "current and complete" from "missing or
behind". :class:`LedgerReader` keeps what a warm start-up asks again (the
statement, the rows last found all applied) so the answer costs one query
and a comparison in C.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import sqlalchemy as sa

from seedguard.ledger.quirks import quirks_for
from seedguard.ledger.rows import (
    Comparison,
    LedgerRow,
    LedgerState,
    PlanRow,
    PlanState,
    as_utc,
    ledger_row,
)
from seedguard.ledger.tables import HEAD_REVISION, LedgerTables

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# What read_against() writes into SQL as a literal: unit names, checksums.
_LITERAL = re.compile(r"[A-Za-z0-9_.:+/=-]{1,255}")

Expected = tuple[tuple[str, int, str], ...]
"""Each unit's ``(name, version, checksum)``, as the fast path compares them."""


class LedgerReader:
    """Every read of one ledger, and the caches that make a warm look cheap."""

    def __init__(self, tables: LedgerTables) -> None:
        self.tables = tables
        # The last read_against() statement (SQLite) or row set (elsewhere),
        # and the units' set it was built for: a warm start-up asks again.
        self._against: tuple[Expected, str] | None = None
        self._applied: tuple[Expected, frozenset[tuple[str, int, str, str]]] | None = None
        # The rows of the last comparison that found every unit applied, as read.
        self._seen_applied: tuple[Expected, Sequence[tuple[Any, ...]]] | None = None

    @overload
    def read(self, conn: Connection, *, full: Literal[True] = ...) -> LedgerState | None: ...
    @overload
    def read(self, conn: Connection, *, full: Literal[False]) -> PlanState | None: ...

    def read(self, conn: Connection, *, full: bool = True) -> LedgerState | PlanState | None:
        """The ledger's rows, or None when the table is missing or not at ``HEAD_REVISION``.

        One statement. It runs in a SAVEPOINT-free way: on failure the caller's
        connection is rolled back, so use a connection dedicated to reading.
        A ledger made by a newer seedguard raises instead of returning rows:
        the caller would otherwise write to a table it does not understand.
        ``full=False`` reads only what planning needs (the runner's fast path).
        """
        # The version table drives the query, so even an empty ledger yields
        # one row carrying the revision (its ledger columns NULL): a newer
        # ledger is recognised whether or not it has rows. A behind ledger
        # lacks some newest column, so the statement fails and we return None.
        table = self.tables.table
        columns = [table] if full else [table.c.name, table.c.version, table.c.checksum,
                                        table.c.status]
        query = sa.select(*columns, self.tables.version_table.c.version_num.label("revision")) \
            .select_from(self.tables.version_table.outerjoin(table, sa.true()))
        try:
            result = conn.execute(query).all()
        except sa.exc.DBAPIError as err:
            self._unreadable(conn, err)
            return None
        if not result:
            return None  # no revision recorded yet: being created, ensure() decides
        if not self.tables.at_head(result[0].revision):
            return None
        if not full:
            # Index access and a NamedTuple: attribute access on result rows
            # is ten times slower, and this runs for every row at start-up.
            return PlanState(PlanRow(r[0], r[1], r[2], r[3]) for r in result if r[0] is not None)
        return LedgerState(ledger_row(r) for r in result if r.name is not None)

    def read_any(self, conn: Connection) -> tuple[LedgerState | None, str | None]:
        """The rows and the schema revision, also of a ledger an older seedguard made.

        For reading only (``status``, ``history``): reading never upgrades a
        ledger, only writes do, under the locks. ``(None, None)``: no ledger.
        """
        state = self.read(conn)
        revision = self.revision(conn)
        if state is None and revision is not None:
            # Behind: read the columns every revision has.
            c = self.tables.table.c
            query = sa.select(c.name, c.version, c.checksum, c.status, c.applied_at,
                              c.duration_ms, c.applied_by)
            state = LedgerState(
                LedgerRow(name=r.name, version=r.version, checksum=r.checksum,
                          status=r.status, applied_at=as_utc(r.applied_at),
                          duration_ms=r.duration_ms, applied_by=r.applied_by)
                for r in conn.execute(query))
            conn.rollback()
        return state, revision

    def read_current(self, conn: Connection) -> LedgerState:
        """The ledger's rows, for use after ``ensure`` (errors propagate)."""
        return LedgerState(ledger_row(r) for r in conn.execute(sa.select(self.tables.table)))

    def row(self, conn: Connection, name: str, version: int) -> LedgerRow | None:
        """The row of ``(name, version)``, compared byte for byte (not by collation)."""
        table = self.tables.table
        rows = conn.execute(sa.select(table).where(table.c.name == name,
                                                   table.c.version == version))
        return next((ledger_row(r) for r in rows if r.name == name), None)

    def revision(self, conn: Connection) -> str | None:
        """The ledger schema's current revision, or None if it was never created."""
        version_table = self.tables.version_table
        if not sa.inspect(conn).has_table(version_table.name, schema=self.tables.schema):
            return None
        return conn.execute(sa.select(version_table.c.version_num)).scalar()

    # -- the lock-free look ------------------------------------------------

    def read_against(self, conn: Connection,
                     expected: Sequence[tuple[str, int, str]]) -> Comparison | None:
        """The ledger compared with each unit's ``(name, version, checksum)``, in one statement.

        The state it returns plans exactly as :meth:`read`'s would for these
        units. The rows are read as the driver's own tuples and compared as
        sets, or as lists with the rows of the last look that found every unit
        applied (a warm start-up reads the same rows again). Where the
        dialect's quirks say so (SQLite), from the third look on one
        connection, the database compares instead: the statement returns the
        ledger's revision, its row count and only the rows that match no
        unit. Its 1,000 literals take longer to prepare than the rows take to
        read once, but sqlite3 keeps a connection's statements prepared, and
        then it is the faster of the two (bench/targets.py: first and warm
        apply()). Elsewhere reading the rows is faster: on PostgreSQL the same
        statement took 42 ms at 1,000 units (a row-value NOT IN list is not
        hashed), and a VALUES anti-join 7-9 ms, prepared or not, against
        1.3-1.6 ms for the rows. Where the database can say whether anything
        changed since a look on the same connection found every unit applied
        (:meth:`~seedguard.ledger.quirks.LedgerQuirks.change_stamp`: SQLite),
        that answer is given again without reading the ledger.

        None when the answer has to come from :meth:`read` instead: no units,
        a ledger that is missing or behind, or, when the database compares, a
        value that cannot be written as a literal or a unit with no row at
        all. A ledger made by a newer seedguard raises, as :meth:`read` does.
        """
        if not expected:
            return None
        expected = expected if isinstance(expected, tuple) else tuple(expected)
        quirks = quirks_for(conn.dialect.name)
        # Taken before the read: a change between the two makes the next stamp
        # differ, so the next look reads again.
        stamp = quirks.change_stamp(conn, self.tables.schema)
        key = f"seedguard.unchanged:{self.tables.qualified_name}"
        if stamp is not None:
            seen = conn.info.get(key)
            if seen is not None and seen[1] == stamp \
                    and (seen[0] is expected or seen[0] == expected):
                # Nothing changed since a look on this connection found every
                # unit applied: the same answer, without reading the ledger.
                return Comparison(True, PlanState())
        if quirks.compares_in_database and self._asked_before(conn, expected):
            compared = self._compare_in_database(conn, expected)
        else:
            compared = self._compare_rows(conn, expected)
        if stamp is not None and compared is not None and compared.all_applied:
            conn.info[key] = (expected, stamp)
        return compared

    def _asked_before(self, conn: Connection, expected: Expected) -> bool:
        """Whether this DB-API connection was asked about ``expected`` twice before.

        A start-up looks once, or twice when it waits for another applier: the
        statement would be prepared for nothing. A process that keeps asking
        (tests, a long-running app) has it prepared from the third look on.
        """
        key = f"seedguard.compared:{self.tables.qualified_name}"
        seen, count = conn.info.get(key, (None, 0))
        same = seen is not None and (seen is expected or seen == expected)
        count = count + 1 if same else 1
        conn.info[key] = (expected, count)
        return count > 2

    def _compare_rows(self, conn: Connection, expected: Expected) -> Comparison | None:
        ledger, version_table = self.tables.quoted(conn)
        # One statement; the version table's row is the one whose status is
        # NULL (status is NOT NULL in the ledger).
        statement = (
            f"SELECT version_num, NULL, NULL, NULL FROM {version_table} UNION ALL "
            f"SELECT name, version, checksum, status FROM {ledger}"
        )
        try:
            result = conn.exec_driver_sql(statement)
            # The driver's tuples, not SQLAlchemy Rows: building 1,000 Rows took
            # as long as the query itself (bench/targets.py, warm no-op).
            rows: Sequence[tuple[Any, ...]] = result.cursor.fetchall()
            result.close()
        except sa.exc.DBAPIError as err:
            self._unreadable(conn, err)
            return None
        # A warm start-up mostly reads the very rows, in the same order, that
        # the last look found all applied: comparing the two lists compares
        # strings in C, where building a set of the rows hashes every checksum
        # again (a third of a warm no-op on PostgreSQL, bench/targets.py).
        # The answer depends on nothing but the rows and the units.
        seen = self._seen_applied
        if seen is not None and (seen[0] is expected or seen[0] == expected) and seen[1] == rows:
            return Comparison(True, PlanState())
        revisions = [row[0] for row in rows if row[3] is None]
        if len(revisions) != 1:
            return None  # no revision yet (being created): the locked path decides
        if not self.tables.at_head(revisions[0]):
            return None
        if self._applied_rows(expected).issubset(rows):
            self._seen_applied = (expected, rows)
            return Comparison(True, PlanState())
        return Comparison(False, PlanState(PlanRow(row[0], row[1], row[2], row[3])
                                           for row in rows if row[3] is not None))

    def _applied_rows(self, expected: Expected) -> frozenset[tuple[str, int, str, str]]:
        """The rows a ledger holds when every unit of ``expected`` is applied, unchanged."""
        cached = self._applied
        if cached is not None and (cached[0] is expected or cached[0] == expected):
            return cached[1]
        rows = frozenset((name, version, checksum, "applied")
                         for name, version, checksum in expected)
        self._applied = (expected, rows)
        return rows

    def _compare_in_database(self, conn: Connection, expected: Expected) -> Comparison | None:
        statement = self._read_against_sql(conn, expected)
        if statement is None:
            return None
        try:
            result = conn.exec_driver_sql(statement).all()
        except sa.exc.DBAPIError as err:
            self._unreadable(conn, err)
            return None
        if not result or result[0][0] != HEAD_REVISION:
            return None
        rows = [PlanRow(r[2], r[3], r[4], r[5]) for r in result if r[2] is not None]
        matched = result[0][1] - len(rows)
        if matched == len(expected):
            return Comparison(True, PlanState())
        seen = {(row.name, row.version) for row in rows}
        rest = [item for item in expected if (item[0], item[1]) not in seen]
        if matched != len(rest):
            return None  # some unit has no row: pending work, read() says which
        rows += [PlanRow(name, version, checksum, "applied") for name, version, checksum in rest]
        return Comparison(False, PlanState(rows))

    def _read_against_sql(self, conn: Connection, expected: Expected) -> str | None:
        # Literals, not 3,000 bound parameters (older SQLite allows 999), and
        # the same string on every warm call, so sqlite3's statement cache
        # prepares it once. Names are validated to [A-Za-z0-9_.:-]; a checksum
        # outside the safe set (a custom checksum_fn) disables the shortcut.
        cached = self._against
        if cached is not None and (cached[0] is expected or cached[0] == expected):
            return cached[1]
        if not all(_LITERAL.fullmatch(name) and _LITERAL.fullmatch(checksum)
                   and type(version) is int for name, version, checksum in expected):
            return None
        ledger, version_table = self.tables.quoted(conn)
        values = ",".join(f"('{name}',{version},'{checksum}')"
                          for name, version, checksum in expected)
        # Every row either matches a unit or is returned, so the units with a
        # matching row number count(*) minus the returned rows. status is NOT
        # NULL; a NULL checksum (a stamped unit) is a mismatch. One NOT IN
        # over a subquery: SQLite builds the literal set's index once (as a
        # join condition it took seven times as long).
        statement = (
            f"SELECT v.version_num, (SELECT count(*) FROM {ledger}), "
            f"l.name, l.version, l.checksum, l.status "
            f"FROM {version_table} v LEFT OUTER JOIN "
            f"(SELECT name, version, checksum, status FROM {ledger} "
            f"WHERE status <> 'applied' OR checksum IS NULL "
            f"OR (name, version, checksum) NOT IN ({values})) l ON 1 = 1"
        )
        self._against = (expected, statement)
        return statement

    def _unreadable(self, conn: Connection, err: sa.exc.DBAPIError) -> None:
        """After a failed read: a lost connection propagates; a missing or behind ledger
        leaves the connection rolled back, for the caller to answer None."""
        if err.connection_invalidated:
            raise err
        conn.rollback()
        log.debug("ledger %s not readable (missing or behind): %s", self.tables.qualified_name,
                  type(err.orig).__name__)
