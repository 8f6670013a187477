"""What the ledger does differently per database, one class each, keyed by dialect name.

Shared code asks :func:`quirks_for` instead of testing ``dialect.name``: how
the lock-free look compares the ledger with the units, and how a failed
create or upgrade of the ledger is explained (which error means a missing
schema or a missing privilege, and the statement that fixes it). A database
with no class of its own gets :class:`LedgerQuirks`' answers: compare in
Python, explain nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from seedguard.bydialect import ByDialect, Registry

if TYPE_CHECKING:
    from collections.abc import Hashable

    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

QUIRKS: Registry[LedgerQuirks] = Registry("ledger quirks")

SetupFailure = Literal["missing_schema", "denied"]

_SQLITE_VERSIONS = "SELECT * FROM pragma_data_version, pragma_schema_version"


class LedgerQuirks(ByDialect):
    """The answers for a database with no class of its own."""

    registry = QUIRKS

    compares_in_database: ClassVar[bool] = False
    """Whether a connection that keeps asking has the database compare the
    ledger with the units, in one statement with the units as literals
    (:meth:`seedguard.ledger.reads.LedgerReader.read_against`), instead of
    reading the rows and comparing them in Python."""

    whoami: ClassVar[str | None] = None
    """SQL returning the connected user and the default schema, for messages."""

    def change_stamp(self, conn: Connection, schema: str | None) -> Hashable | None:
        """A value that differs whenever the database may have changed since it was
        last taken on ``conn``'s DB-API connection (a write on that connection, a
        commit on any other, a schema change); None where the database cannot say.

        The lock-free look answers "every unit applied" again without reading the
        ledger while the stamp it took before its last such answer is unchanged
        (:meth:`seedguard.ledger.reads.LedgerReader.read_against`).
        """
        return None

    def setup_failure(self, err: sa.exc.DBAPIError) -> SetupFailure | None:
        """Why creating or upgrading the ledger failed, if it is a setup problem."""
        return None

    def create_schema(self, where: str) -> str:
        """The statement that creates the schema (database) ``where``."""
        return f"CREATE SCHEMA {where}"

    def grant(self, where: str, user: str) -> str:
        """The statement that lets ``user`` create the ledger in ``where``."""
        return f"GRANT CREATE ON SCHEMA {where} TO {user}"


class SQLiteQuirks(LedgerQuirks):
    # sqlite3 keeps a connection's statements prepared, so from the third
    # look on one connection the statement with 1,000 literals is the faster
    # of the two (bench/targets.py); elsewhere reading the rows is faster.
    dialects = ("sqlite",)
    compares_in_database = True

    def change_stamp(self, conn: Connection, schema: str | None) -> Hashable | None:
        # SQLite says it exactly (https://www.sqlite.org/pragma.html):
        # data_version changes when another connection commits to the file,
        # schema_version with every schema change (a dropped or re-created
        # ledger, from any connection), and sqlite3's total_changes counts
        # every row this connection inserted, updated or deleted, rolled back
        # or not. The three unchanged, the ledger is as it was. Only the main
        # database (an attached one has its own counters) and only sqlite3
        # (other drivers do not expose total_changes).
        if schema is not None:
            return None
        dbapi_connection: Any = conn.connection.dbapi_connection
        total = getattr(dbapi_connection, "total_changes", None)
        execute = getattr(dbapi_connection, "execute", None)
        if type(total) is not int or execute is None:
            return None
        try:
            versions = execute(_SQLITE_VERSIONS).fetchone()
        except Exception:  # an old SQLite without the pragma functions: read the ledger
            return None
        return (tuple(versions), total)


class PostgreSQLQuirks(LedgerQuirks):
    dialects = ("postgresql",)
    whoami = "SELECT current_user, current_schema()"

    def setup_failure(self, err: sa.exc.DBAPIError) -> SetupFailure | None:
        state = getattr(err.orig, "sqlstate", None)
        if state == "3F000":  # invalid_schema_name
            return "missing_schema"
        if state == "42501":  # insufficient_privilege
            return "denied"
        return None


class MySQLQuirks(LedgerQuirks):
    dialects = ("mysql", "mariadb")
    whoami = "SELECT CURRENT_USER(), DATABASE()"

    def setup_failure(self, err: sa.exc.DBAPIError) -> SetupFailure | None:
        code = getattr(err.orig, "args", (None,))[0]
        if code == 1049:  # ER_BAD_DB_ERROR
            return "missing_schema"
        if code in (1044, 1142):  # ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
            return "denied"
        return None

    def create_schema(self, where: str) -> str:
        return f"CREATE DATABASE {where}"

    def grant(self, where: str, user: str) -> str:
        # CURRENT_USER() is user@host; GRANT wants each part quoted.
        account = "@".join(f"'{part}'" for part in user.split("@", 1))
        return (f"GRANT CREATE, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE ON {where}.* "
                f"TO {account}")


@functools.cache
def quirks_for(dialect: str) -> LedgerQuirks:
    """The ledger quirks of ``dialect`` (one shared instance; they hold no state)."""
    return (QUIRKS.get(dialect) or LedgerQuirks)()
