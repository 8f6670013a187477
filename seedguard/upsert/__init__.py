"""Dialect-native bulk upsert by natural key.

``core`` matches rows by key and keeps only the missing and changed ones;
``base`` is the writer interface and the registry that picks a writer by
dialect name; ``postgresql``, ``sqlite`` and ``mysql`` write them with the
dialect's native upsert (``INSERT ... ON CONFLICT (key) DO UPDATE`` on
PostgreSQL and SQLite, ``INSERT ... ON DUPLICATE KEY UPDATE`` on
MySQL/MariaDB; COPY for large writes on PostgreSQL).
"""

from __future__ import annotations

from seedguard.upsert.base import Row, Writer, writer_for
from seedguard.upsert.core import (
    BATCH_SIZE,
    SNAPSHOT_MAX,
    SNAPSHOT_MIN,
    TableLike,
    Upserter,
    UpsertResult,
    batches,
    connection_of,
    key_columns,
    resolve_table,
    unique_column_sets,
    upsert,
)
from seedguard.upsert.postgresql import PG_COPY_THRESHOLD

__all__ = [
    "BATCH_SIZE",
    "PG_COPY_THRESHOLD",
    "SNAPSHOT_MAX",
    "SNAPSHOT_MIN",
    "Row",
    "TableLike",
    "UpsertResult",
    "Upserter",
    "Writer",
    "batches",
    "connection_of",
    "key_columns",
    "resolve_table",
    "unique_column_sets",
    "upsert",
    "writer_for",
]
