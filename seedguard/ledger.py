"""The ledger table: make sure it exists and is current, read it, record units in it.

The ledger's schema belongs to the alembic revisions in ``migrations/`` (shipped
as ``seedguard/_migrations``), tracked in a version table of its own so a user's
``alembic_version`` is never touched. ``HEAD_REVISION`` and ``Ledger.table``
describe the newest revision; the fast path selects every column of it together
with the ledger's revision, so one query tells "current and complete" from
"missing or behind".
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar, overload

import sqlalchemy as sa

from seedguard.errors import ConfigError, SeedguardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# What read_against() writes into SQL as a literal: unit names, checksums.
_LITERAL = re.compile(r"[A-Za-z0-9_.:+/=-]{1,255}")

HEAD_REVISION = "sg0005"
"""The newest revision in ``migrations/versions``; raise it with each new revision."""

_ADDED_AFTER_SG0001 = frozenset({"description", "superseded"})
"""Ledger columns added by revisions after sg0001 (an interrupted sg0001 lacks them)."""

KNOWN_REVISIONS = frozenset({"sg0001", "sg0002", "sg0003", "sg0004", "sg0005"})
"""Every revision this seedguard knows; a ledger at any other one is from a newer release."""

ALEMBIC_RUNS = threading.Lock()
"""Held by every alembic run of this process: alembic's ``op`` and ``context`` are
module-level proxies to the one migration running, so two threads migrating two
ledgers at once (``apply_each`` over schemas) would run each other's operations."""


LedgerStatus = Literal["applied", "running", "dirty"]
"""A ledger row's status: ``running`` only while (or if interrupted while) a
non-transactional unit does its work, or while a transactional unit's
transaction is open (never visible to others unless that transaction was
ended mid-way); ``dirty`` when a transactional unit failed after its
transaction was ended mid-way, so part of its work may be committed."""

BLOCKING_STATUSES = frozenset({"running", "dirty"})
"""Rows whose unit's work may be partly done: it blocks until `seedguard resolve`."""


class PlannedRow(Protocol):
    """What planning reads of a ledger row: both row types below have it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def checksum(self) -> str | None: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class LedgerRow:
    """One recorded application of a unit version."""

    name: str
    version: int
    checksum: str | None
    status: LedgerStatus
    applied_at: dt.datetime
    duration_ms: int | None
    applied_by: str | None
    description: str | None = None  # since sg0002
    # Space-separated checksums this row held before its current one (since sg0003).
    superseded: str | None = None

    def supersedes(self, checksum: str) -> bool:
        """Whether ``checksum`` was applied under this row and then replaced."""
        return bool(self.superseded) and checksum in (self.superseded or "").split()


class PlanRow(NamedTuple):
    """What planning needs of a ledger row; the fast path reads only this."""

    name: str
    version: int
    checksum: str | None
    status: LedgerStatus


Row = TypeVar("Row", bound=PlannedRow, covariant=True)


class RowState(Mapping[tuple[str, int], Row]):
    """Ledger rows by ``(name, version)``, with look-ups by name.

    :class:`LedgerState` holds whole rows; :class:`PlanState`, what the fast
    path reads: building a LedgerRow per row was most of a no-op start-up's
    cost (bench/noop.py). The planner takes either.
    """

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self._rows = {(row.name, row.version): row for row in rows}
        self._latest: dict[str, Row] | None = None

    def __getitem__(self, key: tuple[str, int]) -> Row:
        return self._rows[key]

    def get(self, key: tuple[str, int], default: Any = None) -> Any:  # a plain dict look-up
        return self._rows.get(key, default)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def latest(self, name: str) -> Row | None:
        """The row of the highest recorded version of ``name``."""
        if self._latest is None:
            latest: dict[str, Row] = {}
            for row in self._rows.values():
                seen = latest.get(row.name)
                if seen is None or row.version > seen.version:
                    latest[row.name] = row
            self._latest = latest
        return self._latest.get(name)

    def rows(self) -> list[Row]:
        return list(self._rows.values())


class LedgerState(RowState[LedgerRow]):
    """Whole ledger rows (``status``, ``history``, and the re-read under the locks)."""


class PlanState(RowState[PlanRow]):
    """The planning columns of the ledger's rows (the fast path)."""


class Comparison(NamedTuple):
    """What :meth:`Ledger.read_against` found."""

    all_applied: bool
    """Every unit has an applied row with its checksum: nothing to plan."""
    state: PlanState
    """Unless all applied: the rows as :meth:`Ledger.read` would return them for planning."""


class Ledger:
    """The ledger table ``schema.name`` and the statements that touch it."""

    @staticmethod
    @functools.cache
    def named(name: str, schema: str | None = None) -> Ledger:
        """The shared Ledger for ``schema.name``: one Table, so SQLAlchemy's
        statement cache is hit on every start-up after the first."""
        return Ledger(name, schema)

    def __init__(self, name: str, schema: str | None = None) -> None:
        self.name = name
        self.schema = schema
        # The last read_against() statement (SQLite) or row set (elsewhere),
        # and the units' set it was built for: a warm start-up asks again.
        self._against: tuple[tuple[tuple[str, int, str], ...], str] | None = None
        self._applied: tuple[tuple[tuple[str, int, str], ...],
                             frozenset[tuple[str, int, str, str]]] | None = None
        # The rows of the last comparison that found every unit applied, as read.
        self._seen_applied: tuple[tuple[tuple[str, int, str], ...],
                                  Sequence[tuple[Any, ...]]] | None = None

    # The tables are built when first needed: the lock-free look at start-up
    # only needs their quoted names, and building the two Tables was a
    # twentieth of a fresh process's first apply() (bench/targets.py).

    @property
    def table(self) -> sa.Table:
        """The ledger table at ``HEAD_REVISION``."""
        return self._tables[0]

    @property
    def version_table(self) -> sa.Table:
        """The table holding the ledger's revision (its own alembic version table)."""
        return self._tables[1]

    @functools.cached_property
    def _tables(self) -> tuple[sa.Table, sa.Table]:
        # A MetaData of its own at each build: cached_property takes no lock
        # (Python 3.12 dropped it), and two threads that race here must both
        # get valid tables, where defining a table twice in one MetaData raises.
        name = self.name
        metadata = sa.MetaData()
        table = sa.Table(
            name,
            metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("checksum", sa.String(80)),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("applied_at", sa.DateTime, nullable=False),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("applied_by", sa.String(255)),
            # sg0002: the unit's description, and an index for `history`.
            sa.Column("description", sa.Text),
            # sg0003: the checksums a re-applied row replaced (never go back to them).
            sa.Column("superseded", sa.Text),
            sa.Index(f"ix_{name}_applied_at"[:63], "applied_at"),
            schema=self.schema,
        )
        version_table = sa.Table(
            f"{name}_version",
            metadata,
            sa.Column("version_num", sa.String(32), primary_key=True),
            schema=self.schema,
        )
        return table, version_table

    def _quoted(self, conn: Connection) -> tuple[str, str]:
        """The ledger's and its version table's names as ``conn``'s SQL spells them."""
        preparer = conn.dialect.identifier_preparer
        prefix = f"{preparer.quote_schema(self.schema)}." if self.schema else ""
        return (f"{prefix}{preparer.quote(self.name)}",
                f"{prefix}{preparer.quote(self.name + '_version')}")

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    # -- reading -----------------------------------------------------------

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
        table = self.table
        columns = [table] if full else [table.c.name, table.c.version, table.c.checksum,
                                        table.c.status]
        query = sa.select(*columns, self.version_table.c.version_num.label("revision")) \
            .select_from(self.version_table.outerjoin(table, sa.true()))
        try:
            result = conn.execute(query).all()
        except sa.exc.DBAPIError as err:
            self._unreadable(conn, err)
            return None
        if not result:
            return None  # no revision recorded yet: being created, ensure() decides
        if not self._at_head(result[0].revision):
            return None
        if not full:
            # Index access and a NamedTuple: attribute access on result rows
            # is ten times slower, and this runs for every row at start-up.
            return PlanState(PlanRow(r[0], r[1], r[2], r[3]) for r in result if r[0] is not None)
        return LedgerState(self._row(r) for r in result if r.name is not None)

    def read_any(self, conn: Connection) -> tuple[LedgerState | None, str | None]:
        """The rows and the schema revision, also of a ledger an older seedguard made.

        For reading only (``status``, ``history``): reading never upgrades a
        ledger, only writes do, under the locks. ``(None, None)``: no ledger.
        """
        state = self.read(conn)
        revision = self.revision(conn)
        if state is None and revision is not None:
            # Behind: read the columns every revision has.
            c = self.table.c
            query = sa.select(c.name, c.version, c.checksum, c.status, c.applied_at,
                              c.duration_ms, c.applied_by)
            state = LedgerState(
                LedgerRow(name=r.name, version=r.version, checksum=r.checksum,
                          status=r.status, applied_at=_utc(r.applied_at),
                          duration_ms=r.duration_ms, applied_by=r.applied_by)
                for r in conn.execute(query))
            conn.rollback()
        return state, revision

    def read_against(self, conn: Connection,
                     expected: Sequence[tuple[str, int, str]]) -> Comparison | None:
        """The ledger compared with each unit's ``(name, version, checksum)``, in one statement.

        The state it returns plans exactly as :meth:`read`'s would for these
        units. The rows are read as the driver's own tuples and compared as
        sets, or as lists with the rows of the last look that found every unit
        applied (a warm start-up reads the same rows again). On SQLite, from
        the third look on one connection, the database compares instead: the
        statement returns the ledger's revision, its row count and only the
        rows that match no unit. Its 1,000 literals take longer to prepare
        than the rows take to read once, but sqlite3 keeps a connection's
        statements prepared, and then it is the faster of the two
        (bench/targets.py: first and warm apply()). Elsewhere reading the rows
        is faster: on PostgreSQL the same statement took 42 ms at 1,000 units
        (a row-value NOT IN list is not hashed), and a VALUES anti-join 7-9 ms,
        prepared or not, against 1.3-1.6 ms for the rows.

        None when the answer has to come from :meth:`read` instead: no units,
        a ledger that is missing or behind, or, when SQLite compares, a value
        that cannot be written as a literal or a unit with no row at all. A
        ledger made by a newer seedguard raises, as :meth:`read` does.
        """
        if not expected:
            return None
        expected = expected if isinstance(expected, tuple) else tuple(expected)
        if conn.dialect.name == "sqlite" and self._asked_before(conn, expected):
            return self._compare_in_sqlite(conn, expected)
        return self._compare_rows(conn, expected)

    def _asked_before(self, conn: Connection, expected: tuple[tuple[str, int, str], ...]) -> bool:
        """Whether this DB-API connection was asked about ``expected`` twice before.

        A start-up looks once, or twice when it waits for another applier: the
        statement would be prepared for nothing. A process that keeps asking
        (tests, a long-running app) has it prepared from the third look on.
        """
        key = f"seedguard.compared:{self.qualified_name}"
        seen, count = conn.info.get(key, (None, 0))
        same = seen is not None and (seen is expected or seen == expected)
        count = count + 1 if same else 1
        conn.info[key] = (expected, count)
        return count > 2

    def _compare_rows(self, conn: Connection,
                      expected: tuple[tuple[str, int, str], ...]) -> Comparison | None:
        ledger, version_table = self._quoted(conn)
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
        if not self._at_head(revisions[0]):
            return None
        if self._applied_rows(expected).issubset(rows):
            self._seen_applied = (expected, rows)
            return Comparison(True, PlanState())
        return Comparison(False, PlanState(PlanRow(row[0], row[1], row[2], row[3])
                                           for row in rows if row[3] is not None))

    def _unreadable(self, conn: Connection, err: sa.exc.DBAPIError) -> None:
        """After a failed read: a lost connection propagates; a missing or behind ledger
        leaves the connection rolled back, for the caller to answer None."""
        if err.connection_invalidated:
            raise err
        conn.rollback()
        log.debug("ledger %s not readable (missing or behind): %s", self.qualified_name,
                  type(err.orig).__name__)

    def _at_head(self, revision: str) -> bool:
        """Whether the ledger is at HEAD_REVISION; False if behind, raises if it is newer."""
        if revision == HEAD_REVISION:
            return True
        if revision not in KNOWN_REVISIONS:
            raise newer_ledger(self.qualified_name, revision)
        return False

    def _applied_rows(self, expected: tuple[tuple[str, int, str], ...]
                      ) -> frozenset[tuple[str, int, str, str]]:
        """The rows a ledger holds when every unit of ``expected`` is applied, unchanged."""
        cached = self._applied
        if cached is not None and (cached[0] is expected or cached[0] == expected):
            return cached[1]
        rows = frozenset((name, version, checksum, "applied")
                         for name, version, checksum in expected)
        self._applied = (expected, rows)
        return rows

    def _compare_in_sqlite(self, conn: Connection,
                           expected: tuple[tuple[str, int, str], ...]) -> Comparison | None:
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

    def _read_against_sql(self, conn: Connection,
                          expected: tuple[tuple[str, int, str], ...]) -> str | None:
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
        ledger, version_table = self._quoted(conn)
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

    def read_current(self, conn: Connection) -> LedgerState:
        """The ledger's rows, for use after :meth:`ensure` (errors propagate)."""
        return LedgerState(self._row(r) for r in conn.execute(sa.select(self.table)))

    def revision(self, conn: Connection) -> str | None:
        """The ledger schema's current revision, or None if it was never created."""
        if not sa.inspect(conn).has_table(self.version_table.name, schema=self.schema):
            return None
        return conn.execute(sa.select(self.version_table.c.version_num)).scalar()

    @staticmethod
    def _row(row: Any) -> LedgerRow:
        """The LedgerRow of a result row whose first columns are the ledger's, in order."""
        # By position: attribute access on result rows was half of a re-read
        # of 1,000 rows under the locks (bench/contention.py).
        name, version, checksum, status, applied_at, duration_ms, applied_by, description, \
            superseded = row[:9]
        return LedgerRow(name, version, checksum, status, _utc(applied_at), duration_ms,
                         applied_by, description, superseded)

    # -- schema ------------------------------------------------------------

    def ensure(self, conn: Connection, *, commit: bool = True) -> None:
        """Create the ledger or bring it to ``HEAD_REVISION``; call it under the locks.

        A missing schema or a missing privilege is a ConfigError saying what
        to create or grant (see :meth:`_ensure`).
        """
        try:
            self._ensure(conn, commit=commit)
        except sa.exc.DBAPIError as err:
            problem = None if err.connection_invalidated else setup_problem(self, conn, err)
            if problem is None:
                raise
            raise problem from err

    def _ensure(self, conn: Connection, *, commit: bool = True) -> None:
        """Create the ledger or bring it to ``HEAD_REVISION``.

        A ledger at a revision this seedguard does not know was made by a newer
        release: refuse rather than write rows it might not understand.
        ``commit=False`` leaves everything in the caller's transaction, which
        holds a transaction-level lock a commit would release (
        ``lock_mode="transaction"``).
        """
        current = self.revision(conn)
        if commit:
            conn.commit()
        if current == HEAD_REVISION:
            return
        if current is not None and current not in KNOWN_REVISIONS:
            raise newer_ledger(self.qualified_name, current)
        if current is None:
            self._refuse_foreign_table(conn)
        from alembic import command
        from alembic.config import Config

        log.info("upgrading ledger %s from %s to %s", self.qualified_name,
                 current or "nothing", HEAD_REVISION)
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_path()))
        cfg.attributes.update(
            connection=conn, ledger_table=self.name, ledger_schema=self.schema
        )
        with ALEMBIC_RUNS:
            command.upgrade(cfg, "head")
        if commit:
            conn.commit()

    def _refuse_foreign_table(self, conn: Connection) -> None:
        """Refuse, before any DDL, a table of the ledger's name that is not a ledger.

        A table with exactly a ledger's columns but no revision is one whose
        creation was interrupted (SQLite and MySQL/MariaDB do not roll DDL
        back, so a SIGKILL can land between CREATE TABLE and alembic's stamp);
        the idempotent revisions complete it. Anything else belongs to someone
        else and is left exactly as it is.
        """
        inspector = sa.inspect(conn)
        if not inspector.has_table(self.name, schema=self.schema):
            return
        found = {column["name"] for column in inspector.get_columns(self.name, schema=self.schema)}
        expected = {column.name for column in self.table.columns}
        if expected - _ADDED_AFTER_SG0001 <= found <= expected:
            return
        raise ConfigError(
            f"table {self.qualified_name} exists but is not a seedguard ledger (columns: "
            f"{', '.join(sorted(found))}); set ledger_table (SEEDGUARD_LEDGER_TABLE) to an "
            "unused name, or rename that table"
        )

    # -- writing -----------------------------------------------------------

    def insert(self, conn: Connection, name: str, version: int, checksum: str | None,
               *, status: LedgerStatus = "applied", description: str | None = None) -> None:
        """Record ``(name, version)``; the primary key refuses a second applier."""
        conn.execute(self.table.insert().values(
            name=name, version=version, checksum=checksum, status=status,
            applied_at=utcnow(), duration_ms=None, applied_by=applied_by(),
            description=description,
        ))

    def claim(self, conn: Connection, name: str, version: int, checksum: str, *,
              replaces: LedgerRow | None = None, description: str | None = None) -> bool:
        """Mark ``(name, version)`` as running in ``conn``'s transaction, before any work.

        A new unit's row is inserted (the primary key refuses a second
        applier); a re-applied unit's row is switched to running only while
        it still holds ``replaces``' checksum, which also row-locks it until
        this transaction ends. False: the statement matched nothing, so
        another applier changed the row since it was read; the caller
        re-reads it to tell a lost race from anything else. An IntegrityError
        from the insert propagates for the same reason.
        """
        if replaces is None:
            self.insert(conn, name, version, checksum, status="running",
                        description=description)
            return True
        table = self.table
        superseded = " ".join(filter(None, [replaces.superseded, replaces.checksum]))
        result = conn.execute(
            table.update()
            .where(table.c.name == name, table.c.version == version,
                   table.c.status == "applied", _same(table.c.checksum, replaces.checksum))
            .values(status="running", superseded=superseded or None,
                    applied_at=utcnow(), applied_by=applied_by(), description=description)
        )
        return result.rowcount == 1

    def row(self, conn: Connection, name: str, version: int) -> LedgerRow | None:
        """The row of ``(name, version)``, compared byte for byte (not by collation)."""
        table = self.table
        rows = conn.execute(sa.select(table).where(table.c.name == name,
                                                   table.c.version == version))
        return next((self._row(r) for r in rows if r.name == name), None)

    def finish(self, conn: Connection, name: str, version: int, *, checksum: str | None,
               duration_ms: int, status: LedgerStatus = "applied",
               was: LedgerStatus = "running") -> None:
        """Set the outcome of a row whose status is ``was``; exactly one row must match.

        Only a running row is finished: a row some other applier completed
        meanwhile is never overwritten.
        """
        table = self.table
        result = conn.execute(
            table.update()
            .where(table.c.name == name, table.c.version == version,
                   table.c.status == was)
            .values(checksum=checksum, status=status, duration_ms=duration_ms,
                    applied_at=utcnow(), applied_by=applied_by())
        )
        if result.rowcount != 1:
            raise SeedguardError(
                f"ledger {self.qualified_name}: expected to update one row for "
                f"{name!r} v{version}, matched {result.rowcount}"
            )

    def delete(self, conn: Connection, name: str, version: int | None = None) -> int:
        """Remove the rows of ``name`` (one version, or all); returns how many."""
        table = self.table
        query = table.delete().where(table.c.name == name)
        if version is not None:
            query = query.where(table.c.version == version)
        return conn.execute(query).rowcount


def _utc(value: dt.datetime) -> dt.datetime:
    # Stored naive, in UTC (utcnow()).
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def newer_ledger(qualified_name: str, revision: str) -> SeedguardError:
    """The refusal of an older seedguard to touch a ledger made by a newer one."""
    return SeedguardError(
        f"ledger {qualified_name} is at schema revision {revision!r}, made by a newer "
        f"seedguard (this one knows up to {HEAD_REVISION!r}) and will not be written to; "
        "upgrade seedguard (pip install -U seedguard) to use it"
    )


def setup_problem(ledger: Ledger, conn: Connection, err: sa.exc.DBAPIError) -> ConfigError | None:
    """What to create or grant when creating or upgrading ``ledger`` failed; None if unknown.

    Rolls ``conn`` back (PostgreSQL refuses every statement of an aborted
    transaction) to ask the server who we are and where the ledger goes.
    """
    postgres = conn.dialect.name == "postgresql"
    state = getattr(err.orig, "sqlstate", None) if postgres else None
    code = None if postgres else getattr(err.orig, "args", (None,))[0]
    schema = ledger.schema
    missing_schema = state == "3F000" or code == 1049  # invalid_schema_name, ER_BAD_DB_ERROR
    # insufficient_privilege; ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
    denied = state == "42501" or code in (1044, 1142)
    if not (missing_schema or denied):
        return None
    user, where = conn.engine.url.username or "the connecting user", schema
    try:
        conn.rollback()
        current = "current_user, current_schema()" if postgres else "CURRENT_USER(), DATABASE()"
        user, default = conn.execute(sa.text(f"SELECT {current}")).one()
        where = schema or default
    except sa.exc.DBAPIError:
        pass
    what = f"cannot create or upgrade the ledger {ledger.qualified_name}"
    if missing_schema:
        create = f"CREATE SCHEMA {where}" if postgres else f"CREATE DATABASE {where}"
        return ConfigError(
            f"{what}: schema {where!r} does not exist; create it ({create}) or set "
            "ledger_schema (SEEDGUARD_LEDGER_SCHEMA) to one that exists"
        )
    if postgres:
        grant = f"GRANT CREATE ON SCHEMA {where} TO {user}"
    else:  # CURRENT_USER() is user@host; GRANT wants each part quoted
        account = "@".join(f"'{part}'" for part in str(user).split("@", 1))
        grant = (f"GRANT CREATE, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE ON {where}.* "
                 f"TO {account}")
    return ConfigError(
        f"{what}: {user} may not create tables in {where!r}; grant it ({grant}), or run "
        "`seedguard upgrade` once as a user who may"
    )


def migrations_path() -> Path:
    """Where the ledger's alembic scripts are: inside the wheel, or the repository root."""
    packaged = Path(str(resources.files("seedguard"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / "migrations"
    if source.is_dir():
        return source
    raise ConfigError(
        "seedguard's ledger migrations are missing from the installation; reinstall seedguard"
    )


def utcnow() -> dt.datetime:
    """Now in UTC, naive: every backend stores it as-is, and reads add UTC back."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def applied_by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:255]
