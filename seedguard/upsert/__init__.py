"""Dialect-native bulk upsert by natural key.

``core`` matches rows by key and keeps only the missing and changed ones;
``base`` is the writer interface and the registry that picks a writer by
dialect name; ``postgresql``, ``sqlite`` and ``mysql`` write them with the
dialect's native upsert (``INSERT ... ON CONFLICT (key) DO UPDATE`` on
PostgreSQL and SQLite, ``INSERT ... ON DUPLICATE KEY UPDATE`` on
MySQL/MariaDB; COPY for large writes on PostgreSQL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from seedguard.upsert.postgresql import PG_COPY_THRESHOLD


def __getattr__(name: str) -> Any:
    # The PostgreSQL writer (and its uuid, decimal, io) loads when a PostgreSQL
    # upsert first needs it (base.writer_for), not at `import seedguard`.
    if name == "PG_COPY_THRESHOLD":
        from seedguard.upsert import postgresql

        return postgresql.PG_COPY_THRESHOLD
    raise AttributeError(f"module 'seedguard.upsert' has no attribute {name!r}")

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
