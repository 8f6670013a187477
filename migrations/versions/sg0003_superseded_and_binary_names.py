"""Remember the data checksums a unit's row replaced, and compare names byte for byte.

Revision ID: sg0003
Revises: sg0002
Create Date: 2026-12-01

``superseded`` lists (space-separated) the checksums a re-applied unit's row
held before its current one. An applier still running older code (a replica
during a rolling deploy) finds its checksum there and leaves the newer data
alone instead of re-applying the old.

On MySQL/MariaDB ``name`` gets a binary collation: the default collations
compare case-insensitively, so ``Roles`` and ``roles`` would collide on the
primary key although seedguard (and every other database) tells them apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "sg0003"
down_revision = "sg0002"
branch_labels = None
depends_on = None

table = context.config.attributes["ledger_table"]
schema = context.config.attributes.get("ledger_schema")


def upgrade() -> None:
    # Idempotent: on SQLite and MySQL/MariaDB each statement commits on its
    # own, so a killed applier may have done either step already.
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "superseded" not in {c["name"] for c in inspector.get_columns(table, schema=schema)}:
        op.add_column(table, sa.Column("superseded", sa.Text, nullable=True), schema=schema)
    if bind.dialect.name in ("mysql", "mariadb"):
        op.alter_column(table, "name", existing_type=sa.String(255), existing_nullable=False,
                        type_=sa.String(255, collation="utf8mb4_bin"), schema=schema)


def downgrade() -> None:
    op.drop_column(table, "superseded", schema=schema)
