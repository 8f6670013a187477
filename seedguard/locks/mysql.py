"""MySQL and MariaDB: ``GET_LOCK`` on a dedicated session."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from typing import TYPE_CHECKING

from seedguard.locks.base import DatabaseLock

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.locks.deadline import Deadline

_YEAR = 365 * 24 * 3600


class MySQLLock(DatabaseLock):
    """``GET_LOCK`` on a dedicated session (MySQL and MariaDB)."""

    dialects = ("mysql", "mariadb")

    @property
    def lock_name(self) -> str:
        # GET_LOCK names are server-wide and at most 64 characters.
        return "seedguard:" + hashlib.sha256(self.key.encode()).hexdigest()[:40]

    def acquire(self, deadline: Deadline) -> None:
        from sqlalchemy import text

        from seedguard.connect import connection_errors

        with connection_errors(self.engine):
            conn = self.engine.connect()
        try:
            remaining = deadline.remaining()
            # GET_LOCK takes whole seconds (fractions are truncated on MySQL).
            # MariaDB answers NULL to the "negative waits forever" of MySQL, so
            # "forever" is a year.
            seconds = _YEAR if remaining is None else max(0, int(remaining + 0.999))
            got = conn.execute(text("SELECT GET_LOCK(:name, :timeout)"),
                               {"name": self.lock_name, "timeout": seconds}).scalar()
            conn.commit()
            if got != 1:
                raise self._timeout(deadline)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _release(self, conn: Connection) -> None:
        from sqlalchemy import text

        with contextlib.suppress(Exception):
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})
            conn.commit()

    def verify(self) -> None:
        from sqlalchemy import text

        if self.conn is None:
            return
        try:
            mine = self.conn.execute(
                text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"), {"name": self.lock_name}
            ).scalar()
            self.conn.commit()
        except Exception as err:
            raise self._lost(err) from err
        if not mine:
            raise self._lost(RuntimeError("lock no longer held by this session"))

    def holder(self) -> str | None:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                owner = conn.execute(text("SELECT IS_USED_LOCK(:name)"),
                                     {"name": self.lock_name}).scalar()
                if owner is None:
                    return None
                row = conn.execute(
                    text("SELECT host, time FROM information_schema.processlist WHERE id = :id"),
                    {"id": owner},
                ).first()
        except Exception:
            return None
        if row is None:
            return f"connection {owner}"
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(row.time or 0))
        return f"connection {owner} from {row.host} since {since.isoformat(timespec='seconds')}"
