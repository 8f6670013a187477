"""Creating the ledger or bringing it to ``HEAD_REVISION``, through alembic.

The ledger's schema belongs to the alembic revisions in ``migrations/``
(shipped as ``seedguard/_migrations``), tracked in a version table of its own
so a user's ``alembic_version`` is never touched. Alembic is imported only
when a ledger has to be created or upgraded.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from seedguard.errors import ConfigError
from seedguard.ledger.quirks import quirks_for
from seedguard.ledger.tables import (
    ADDED_AFTER_SG0001,
    HEAD_REVISION,
    KNOWN_REVISIONS,
    LedgerTables,
    newer_ledger,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.ledger.reads import LedgerReader

log = logging.getLogger(__name__)

ALEMBIC_RUNS = threading.Lock()
"""Held by every alembic run of this process: alembic's ``op`` and ``context`` are
module-level proxies to the one migration running, so two threads migrating two
ledgers at once (``apply_each`` over schemas) would run each other's operations."""


class LedgerUpgrade:
    """Creates one ledger or upgrades it to ``HEAD_REVISION``."""

    def __init__(self, tables: LedgerTables, reader: LedgerReader) -> None:
        self.tables = tables
        self.reader = reader

    def ensure(self, conn: Connection, *, commit: bool = True) -> None:
        """Create the ledger or bring it to ``HEAD_REVISION``; call it under the locks.

        A missing schema or a missing privilege is a ConfigError saying what
        to create or grant (see :func:`setup_problem`).
        """
        try:
            self._ensure(conn, commit=commit)
        except sa.exc.DBAPIError as err:
            problem = None if err.connection_invalidated else setup_problem(self.tables, conn, err)
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
        current = self.reader.revision(conn)
        if commit:
            conn.commit()
        if current == HEAD_REVISION:
            return
        if current is not None and current not in KNOWN_REVISIONS:
            raise newer_ledger(self.tables.qualified_name, current)
        if current is None:
            self._refuse_foreign_table(conn)
        from alembic import command
        from alembic.config import Config

        log.info("upgrading ledger %s from %s to %s", self.tables.qualified_name,
                 current or "nothing", HEAD_REVISION)
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_path()))
        cfg.attributes.update(
            connection=conn, ledger_table=self.tables.name, ledger_schema=self.tables.schema
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
        name, schema = self.tables.name, self.tables.schema
        inspector = sa.inspect(conn)
        if not inspector.has_table(name, schema=schema):
            return
        found = {column["name"] for column in inspector.get_columns(name, schema=schema)}
        expected = {column.name for column in self.tables.table.columns}
        if expected - ADDED_AFTER_SG0001 <= found <= expected:
            return
        raise ConfigError(
            f"table {self.tables.qualified_name} exists but is not a seedguard ledger (columns: "
            f"{', '.join(sorted(found))}); set ledger_table (SEEDGUARD_LEDGER_TABLE) to an "
            "unused name, or rename that table"
        )


def setup_problem(tables: LedgerTables, conn: Connection,
                  err: sa.exc.DBAPIError) -> ConfigError | None:
    """What to create or grant when creating or upgrading a ledger failed; None if unknown.

    Rolls ``conn`` back (PostgreSQL refuses every statement of an aborted
    transaction) to ask the server who we are and where the ledger goes.
    """
    quirks = quirks_for(conn.dialect.name)
    failure = quirks.setup_failure(err)
    if failure is None:
        return None
    user, where = conn.engine.url.username or "the connecting user", tables.schema
    try:
        conn.rollback()
        if quirks.whoami is not None:
            user, default = conn.execute(sa.text(quirks.whoami)).one()
            where = tables.schema or default
    except sa.exc.DBAPIError:
        pass
    what = f"cannot create or upgrade the ledger {tables.qualified_name}"
    if failure == "missing_schema":
        return ConfigError(
            f"{what}: schema {where!r} does not exist; create it "
            f"({quirks.create_schema(str(where))}) or set ledger_schema "
            "(SEEDGUARD_LEDGER_SCHEMA) to one that exists"
        )
    return ConfigError(
        f"{what}: {user} may not create tables in {where!r}; grant it "
        f"({quirks.grant(str(where), str(user))}), or run `seedguard upgrade` once as a user "
        "who may"
    )


def migrations_path() -> Path:
    """Where the ledger's alembic scripts are: inside the wheel, or the repository root."""
    packaged = Path(str(resources.files("seedguard"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "migrations"
    if source.is_dir():
        return source
    raise ConfigError(
        "seedguard's ledger migrations are missing from the installation; reinstall seedguard"
    )
