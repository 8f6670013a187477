"""Telling waiters that a ledger changed: PostgreSQL's NOTIFY, nothing elsewhere.

An applier sends ``pg_notify`` in each unit's own transaction, so the
notification is delivered when (and only if) the unit commits, with the work
visible to whoever reads after it (PostgreSQL delivers notifications after
the sending transaction commits, and drops them on rollback). A waiter
(:mod:`seedguard.readiness`) LISTENs and looks at the ledger again when one
arrives. Other databases have no such channel: their waiters poll.

One class per dialect in a small registry, as the locks are.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, ClassVar

from seedguard.bydialect import ByDialect, Registry

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.ledger import Ledger


NOTIFIERS: Registry[Notifier] = Registry("change notifier")
"""The :class:`Notifier` of each dialect with a channel; others poll (the base class)."""


class Notifier(ByDialect):
    """No channel: waiters on this dialect poll."""

    registry = NOTIFIERS
    can_listen: ClassVar[bool] = False

    @staticmethod
    def notify(conn: Connection, channel: str) -> None:
        """Announce a change in the open transaction on ``conn``."""


class PostgresNotifier(Notifier):
    dialects = ("postgresql",)
    can_listen = True

    @staticmethod
    def notify(conn: Connection, channel: str) -> None:
        from sqlalchemy import text

        # pg_notify rather than NOTIFY: the channel is a bound parameter, not
        # an identifier spliced into SQL. Transaction-pooling proxies
        # (PgBouncer) pass NOTIFY through, since it is transaction-scoped.
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


def channel(ledger: Ledger) -> str:
    """The channel of ``ledger``: a lower-case identifier well under PostgreSQL's 63 bytes.

    Derived from the ledger as configured (schema and table), so an applier
    and a waiter configured alike meet on it; one configured with another
    spelling of the same ledger falls back to the waiter's polling.
    """
    digest = hashlib.sha256(ledger.qualified_name.encode()).hexdigest()[:16]
    return f"seedguard_{digest}"


def notifier(dialect: str) -> type[Notifier]:
    """The notifier of ``dialect``: the base class (waiters poll) when it has no channel."""
    return NOTIFIERS.get(dialect) or Notifier


def notify_applied(conn: Connection, ledger: Ledger) -> None:
    """Tell waiters on ``ledger`` that a unit is recorded, once the open transaction commits."""
    cls = notifier(conn.dialect.name)
    if cls.can_listen:
        cls.notify(conn, channel(ledger))
