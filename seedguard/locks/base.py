"""What every database lock does, and the registry that picks one class per dialect."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from seedguard.errors import ConfigError, LockTimeout, SeedguardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from seedguard.locks.deadline import Deadline


DATABASE_LOCKS: dict[str, type[DatabaseLock]] = {}
"""The session-level lock class of each dialect (``lock_mode="session"``, the default)."""

TRANSACTION_LOCKS: dict[str, type[DatabaseLock]] = {}
"""``lock_mode="transaction"``: only PostgreSQL has transaction-scoped advisory locks."""


class DatabaseLock:
    """A lock held by one database session, chosen by dialect from ``DATABASE_LOCKS``.

    ``acquire`` opens a dedicated connection and takes the lock there; the
    server drops it if this process dies. ``verify`` is called before each
    unit so a lost lock connection stops the run instead of leaving it
    unprotected.
    """

    dialects: ClassVar[tuple[str, ...]] = ()
    # True for a lock taken per unit transaction (lock_unit) rather than per run.
    per_transaction: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Each backend module registers its class by defining it: the registry
        # is the list of dialects, not an if-chain over them.
        super().__init_subclass__(**kwargs)
        registry = TRANSACTION_LOCKS if cls.per_transaction else DATABASE_LOCKS
        for dialect in cls.dialects:
            registry[dialect] = cls

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self.conn: Connection | None = None

    def acquire(self, deadline: Deadline) -> None:
        raise NotImplementedError

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            self._release(conn)
        finally:
            conn.close()

    def verify(self) -> None:
        """Raise if the lock was lost (its connection died)."""

    def lock_unit(self, conn: Connection, deadline: Deadline) -> None:
        """Take a lock that lasts for ``conn``'s current transaction.

        Only the transaction-level mode (PgBouncer) does anything here; the
        session locks are already held for the whole run.
        """

    @property
    def work_connection(self) -> Connection | None:
        """The connection units may run on, if the lock lives on one.

        Running units on the lock's own session means an applier uses one
        connection, not two: 64 appliers fit in PostgreSQL's default
        ``max_connections = 100``. Session-level locks (``pg_advisory_lock``,
        ``GET_LOCK``) survive the per-unit commits and rollbacks, and a lost
        lock connection then also fails the unit that was running on it.
        """
        return self.conn

    def holder(self) -> str | None:
        """Who holds the lock right now, or None if nobody does."""
        return None

    def _release(self, conn: Connection) -> None:
        pass

    def _lost(self, err: Exception) -> SeedguardError:
        return SeedguardError(
            f"lost the database lock {self.key!r} (its connection failed: "
            f"{type(err).__name__}); stopped before the next unit so no unit runs "
            "unprotected; run again to continue"
        )

    def _timeout(self, deadline: Deadline, cause: Exception | None = None) -> LockTimeout:
        holder = self.holder() or "an unknown holder"
        return LockTimeout(
            f"timed out after {deadline.seconds or 0:g} s waiting for the database lock "
            f"{self.key!r}, held by {holder}; wait for it to finish or raise lock_timeout",
            lock=self.key, holder=holder,
        )


def database_lock(engine: Engine, key: str, mode: str = "session") -> DatabaseLock:
    """The database lock for ``engine``'s dialect and ``mode`` ("session" or "transaction")."""
    locks = TRANSACTION_LOCKS if mode == "transaction" else DATABASE_LOCKS
    cls = locks.get(engine.dialect.name)
    if cls is None:
        if mode == "transaction":
            raise ConfigError(
                f"lock_mode=\"transaction\" is for PostgreSQL behind a transaction-pooling "
                f"proxy such as PgBouncer; {engine.dialect.name!r} has no transaction-level "
                "lock: use the default lock_mode=\"session\""
            )
        raise ConfigError(
            f"seedguard has no database lock for {engine.dialect.name!r}; supported: "
            f"{', '.join(sorted(DATABASE_LOCKS))}"
        )
    return cls(engine, key)


def lock_key(engine: Engine, ledger_name: str, schema: str | None) -> str:
    """The database lock's key: database, schema and ledger table.

    MySQL's GET_LOCK names are server-wide, so the database is part of the key.
    """
    database = engine.url.database or ""
    return f"{database}.{schema or ''}.{ledger_name}"
