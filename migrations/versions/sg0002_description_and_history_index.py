"""Add the unit's description to each ledger row, and index applied_at for history.

Revision ID: sg0002
Revises: sg0001
Create Date: 2026-11-24

``description`` keeps the unit's docstring (or ``description=``) next to the
row, so ``seedguard history`` can say what a unit did after its code is gone.
``history`` lists rows newest first; the index keeps that cheap on a ledger
with years of rows. Both changes are additive: an sg0001 ledger's rows are
kept as they are (their description stays NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "sg0002"
down_revision = "sg0001"
branch_labels = None
depends_on = None

table = context.config.attributes["ledger_table"]
schema = context.config.attributes.get("ledger_schema")
# PostgreSQL truncates identifiers at 63 characters and MySQL refuses more
# than 64; a ledger_table name may be 63 long itself.
index = f"ix_{table}_applied_at"[:63]


def upgrade() -> None:
    # Idempotent: on SQLite and MySQL/MariaDB each statement commits
    # on its own, so a killed applier may have done either step already.
    inspector = sa.inspect(op.get_bind())
    if "description" not in {c["name"] for c in inspector.get_columns(table, schema=schema)}:
        op.add_column(table, sa.Column("description", sa.Text, nullable=True), schema=schema)
    if index not in {i["name"] for i in inspector.get_indexes(table, schema=schema)}:
        op.create_index(index, table, ["applied_at"], schema=schema)


def downgrade() -> None:
    op.drop_index(index, table_name=table, schema=schema)
    op.drop_column(table, "description", schema=schema)
