"""SQLite: no database lock; the file lock beside the database serialises its appliers."""

from __future__ import annotations

from seedguard.locks.base import DatabaseLock
from seedguard.locks.deadline import Deadline


class NoDatabaseLock(DatabaseLock):
    """SQLite: one file, one host; the file lock beside it serialises everyone."""

    dialects = ("sqlite",)

    def acquire(self, deadline: Deadline) -> None:
        pass
