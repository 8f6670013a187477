"""The two locks in their order, for every writer of a ledger: file lock, then database lock."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from seedguard.locks.base import DatabaseLock, database_lock, lock_key
from seedguard.locks.deadline import Deadline
from seedguard.locks.file import FileLock, default_lock_path

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from seedguard.config import Settings


def ledger_locks(engine: Engine, settings: Settings) -> tuple[FileLock, DatabaseLock, Deadline]:
    """The two locks every writer of ``settings``' ledger takes, and the one deadline
    bounding both waits: apply() and the ledger commands (stamp, forget, resolve)."""
    file_lock = FileLock(settings.lock_path
                         or default_lock_path(engine.url, settings.ledger_schema))
    key = lock_key(engine, settings.ledger_table, settings.ledger_schema)
    db_lock = database_lock(engine, key, settings.lock_mode, lease=settings.lease)
    return file_lock, db_lock, Deadline(settings.lock_timeout)


@contextlib.contextmanager
def both_locks(file_lock: FileLock, db_lock: DatabaseLock, deadline: Deadline, *,
               skip_if: Callable[[], bool] | None = None) -> Iterator[bool]:
    """Hold the file lock, then the database lock; release in reverse order.

    ``skip_if`` runs once the file lock is had, before the database lock:
    when it answers True, the database lock is not taken and the body gets
    False (nothing to do). When this process had to wait for the
    file lock, whoever held it has most likely just done the work, and
    ``skip_if`` runs just after the wait without holding the lock, so that the
    waiters of one hand-over look side by side instead of one after another
    (bench/contention.py); if it answers False, the file lock is taken again.
    ``skip_if`` must only read, as the lock-free fast path does.
    """
    waited = file_lock.acquire(deadline)
    try:
        if skip_if is not None:
            if waited:
                file_lock.release()
            if skip_if():
                yield False
                return
            if waited:
                file_lock.acquire(deadline)
        db_lock.acquire(deadline)
        try:
            yield True
        finally:
            db_lock.release()
    finally:
        file_lock.release()  # a no-op when it is not held
