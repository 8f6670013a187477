"""Alembic environment for seedguard's ledger; seedguard passes the connection in.

This file is run by ``seedguard.ledger.Ledger.ensure`` only, never by a user's
``alembic`` command.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
table = config.attributes["ledger_table"]
schema = config.attributes.get("ledger_schema")

context.configure(
    connection=connection,
    version_table=f"{table}_version",
    version_table_schema=schema,
    target_metadata=None,
)
with context.begin_transaction():
    context.run_migrations()
