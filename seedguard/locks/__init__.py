"""The two locks that serialise appliers: a file lock per host, a database lock across hosts.

Both are released by the operating system or the database server when their
holder dies (the file lock is an ``flock`` on an open descriptor; the database
locks belong to a session), so a killed applier never leaves a stale lock.
Every wait is bounded by one :class:`Deadline` and ends in :class:`LockTimeout`
naming the holder.

One module per concern: ``deadline`` (the shared time budget and the holder
record), ``file`` (the per-host file lock), ``base`` (the database lock's
interface and the dialect registry), one module per database
(``postgresql``, ``mysql``, ``sqlite``) and ``sequence`` (the two locks in
their order, for every writer of a ledger).
"""

from __future__ import annotations

# The backends register themselves with base's registry when imported.
from seedguard.locks import mysql as _mysql  # noqa: F401
from seedguard.locks import postgresql as _postgresql  # noqa: F401
from seedguard.locks import sqlite as _sqlite  # noqa: F401
from seedguard.locks.base import (
    DATABASE_LOCKS,
    TRANSACTION_LOCKS,
    DatabaseLock,
    database_lock,
    lock_key,
)
from seedguard.locks.deadline import Deadline, describe_holder, holder_record
from seedguard.locks.file import (
    FILE_LOCK_POLL_SECONDS,
    FileLock,
    default_lock_path,
    private_lock_dir,
)
from seedguard.locks.mysql import MySQLLock
from seedguard.locks.postgresql import PostgresSessionLock, PostgresTransactionLock
from seedguard.locks.sequence import both_locks, ledger_locks
from seedguard.locks.sqlite import NoDatabaseLock

__all__ = [
    "DATABASE_LOCKS",
    "FILE_LOCK_POLL_SECONDS",
    "TRANSACTION_LOCKS",
    "DatabaseLock",
    "Deadline",
    "FileLock",
    "MySQLLock",
    "NoDatabaseLock",
    "PostgresSessionLock",
    "PostgresTransactionLock",
    "both_locks",
    "database_lock",
    "default_lock_path",
    "describe_holder",
    "holder_record",
    "ledger_locks",
    "lock_key",
    "private_lock_dir",
]
