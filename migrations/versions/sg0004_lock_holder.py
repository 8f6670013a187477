"""The database lock's holder and its heartbeat, for the lease.

Revision ID: sg0004
Revises: sg0003
Create Date: 2026-12-07

``<ledger>_holder`` has at most one row per lock: who holds it (host, pid,
since), the server sessions of its lock and of its heartbeat, the lease it
promised and when it last renewed it, in the server's UTC clock. A waiter
that finds the heartbeat older than the lease ends both sessions: on
MySQL/MariaDB no session setting can bound how long the server keeps the
session of a holder whose host vanished behind a silent network cut.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "sg0004"
down_revision = "sg0003"
branch_labels = None
depends_on = None

table = context.config.attributes["ledger_table"]
schema = context.config.attributes.get("ledger_schema")


def upgrade() -> None:
    # Idempotent, as the earlier revisions: MySQL/MariaDB commit DDL at once,
    # so a killed applier may have created the table but not stamped sg0004.
    if sa.inspect(op.get_bind()).has_table(f"{table}_holder", schema=schema):
        return
    op.create_table(
        f"{table}_holder",
        sa.Column("lock_key", sa.String(255), nullable=False),
        sa.Column("session", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_session", sa.BigInteger, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("since", sa.DateTime, nullable=False),
        sa.Column("heartbeat", sa.DateTime, nullable=False),
        sa.Column("lease", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("lock_key", name=f"{table}_holder_pkey"[:63]),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table(f"{table}_holder", schema=schema)
