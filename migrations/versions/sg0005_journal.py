"""The journal: what each data seed application inserted, updated and pruned.

Revision ID: sg0005
Revises: sg0004
Create Date: 2026-12-07

``<ledger>_journal`` holds, per application of a data seed (its name,
version and checksum), one row per written batch and kind of change
(``insert``, ``update``, ``delete``): the table, the columns and, as
zlib-compressed JSON, the rows' keys with their values before and after. ``seedguard downgrade``
reads it to restore exactly those rows. It is written in the unit's own
transaction, so it commits with the work and the ledger row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

revision = "sg0005"
down_revision = "sg0004"
branch_labels = None
depends_on = None

table = context.config.attributes["ledger_table"]
schema = context.config.attributes.get("ledger_schema")


def upgrade() -> None:
    # Idempotent, as the earlier revisions: MySQL/MariaDB commit DDL at once,
    # so a killed applier may have created the table but not stamped sg0005.
    bind = op.get_bind()
    if sa.inspect(bind).has_table(f"{table}_journal", schema=schema):
        return
    # A batch's rows can pass BLOB's 64 KB on MySQL/MariaDB; the unit name
    # compares byte for byte there, as the ledger's does (sg0003).
    payload = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    name = sa.String(255).with_variant(sa.String(255, collation="utf8mb4_bin"),
                                       "mysql", "mariadb")
    op.create_table(
        f"{table}_journal",
        sa.Column("name", name, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("checksum", sa.String(80), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("entries", payload, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", "checksum", "seq",
                                name=f"{table}_journal_pkey"[:63]),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table(f"{table}_journal", schema=schema)
