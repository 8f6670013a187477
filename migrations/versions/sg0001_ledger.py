"""Create the ledger table.

Revision ID: sg0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "sg0001"
down_revision = None
branch_labels = None
depends_on = None

table = context.config.attributes["ledger_table"]
schema = context.config.attributes.get("ledger_schema")


def upgrade() -> None:
    # Idempotent: on SQLite and MySQL/MariaDB, DDL is not rolled
    # back, so an applier killed after CREATE TABLE but before alembic stamped
    # the revision leaves the table behind; the next run completes the
    # revision. Ledger.ensure has checked that such a table has the ledger's shape.
    if sa.inspect(op.get_bind()).has_table(table, schema=schema):
        return
    op.create_table(
        table,
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("checksum", sa.String(80), nullable=True),
        # "applied", or "running" while a non-transactional unit is under way.
        sa.Column("status", sa.String(16), nullable=False, server_default="applied"),
        sa.Column("applied_at", sa.DateTime, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("applied_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name=f"{table}_pkey"),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table(table, schema=schema)
