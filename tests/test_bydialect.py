"""One registry style for per-dialect classes: registered by being defined, lazy on first use."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from seedguard.bydialect import ByDialect, Registry
from seedguard.errors import ConfigError


def test_a_subclass_is_registered_for_each_dialect_it_declares() -> None:
    family: Registry[Base] = Registry("test backend")

    class Base(ByDialect):
        registry = family

    class Maria(Base):
        dialects = ("mysql", "mariadb")

    class Variant(Maria):  # inherits dialects: not the dialect's class
        pass

    assert family.get("mysql") is Maria and family.get("mariadb") is Maria
    assert family.get("sqlite") is None
    assert family.names() == ["mariadb", "mysql"]
    assert Variant not in (family.get(name) for name in family)


def test_an_unknown_dialect_raises_the_callers_error_naming_the_supported_ones() -> None:
    family: Registry[ByDialect] = Registry("bulk writer", lazy={"postgresql": "json"})
    with pytest.raises(ConfigError, match=r"no bulk writer for the 'oracle' dialect; "
                                          r"supported: postgresql"):
        family.require("oracle", ConfigError)


def test_a_lazy_backend_is_imported_only_when_its_dialect_is_asked_for() -> None:
    from seedguard.upsert.base import WRITERS

    sys.modules.pop("seedguard.upsert.mysql", None)
    assert "mariadb" in WRITERS and "seedguard.upsert.mysql" not in sys.modules
    writer = WRITERS.get("mariadb")
    assert writer is not None and writer.__module__ == "seedguard.upsert.mysql"


# -- every per-dialect family is one of these registries ----------------------------------


def test_each_family_registers_its_classes_by_dialect() -> None:
    from seedguard.locks import (
        DATABASE_LOCKS,
        TRANSACTION_LOCKS,
        MySQLLock,
        NoDatabaseLock,
        PostgresSessionLock,
        PostgresTransactionLock,
    )
    from seedguard.notify import NOTIFIERS, PostgresNotifier
    from seedguard.schema import SCOPES, MySQLScope, PostgresScope
    from seedguard.upsert.base import WRITERS
    from seedguard.verify import PROBES, MySQLProbe, PostgresProbe, SQLiteProbe

    registries: list[Registry[Any]] = [DATABASE_LOCKS, TRANSACTION_LOCKS, NOTIFIERS, SCOPES,
                                       PROBES, WRITERS]
    assert all(isinstance(registry, Registry) for registry in registries)
    assert {name: DATABASE_LOCKS[name] for name in DATABASE_LOCKS} == {
        "mariadb": MySQLLock, "mysql": MySQLLock, "postgresql": PostgresSessionLock,
        "sqlite": NoDatabaseLock}
    assert list(TRANSACTION_LOCKS) == ["postgresql"]
    assert TRANSACTION_LOCKS["postgresql"] is PostgresTransactionLock
    assert dict(zip(NOTIFIERS, map(NOTIFIERS.__getitem__, NOTIFIERS), strict=True)) == {
        "postgresql": PostgresNotifier}
    assert [SCOPES[name] for name in SCOPES] == [MySQLScope, MySQLScope, PostgresScope]
    assert [PROBES[name] for name in PROBES] == [MySQLProbe, MySQLProbe, PostgresProbe,
                                                  SQLiteProbe]
    assert sorted(WRITERS) == ["mariadb", "mysql", "postgresql", "sqlite"]
    with pytest.raises(KeyError):
        DATABASE_LOCKS["oracle"]


def test_an_unsupported_dialect_gets_each_familys_own_message() -> None:
    import sqlalchemy as sa

    from seedguard.locks import database_lock
    from seedguard.notify import Notifier, notifier
    from seedguard.schema import scoped

    engine = sa.create_engine("sqlite://")
    engine.dialect.name = "oracle"  # a dialect seedguard has no classes for
    try:
        with pytest.raises(ConfigError, match=r"no database lock for the 'oracle' dialect; "
                                              r"supported: mariadb, mysql, postgresql, sqlite"):
            database_lock(engine, "key")
        with pytest.raises(ConfigError, match=r"lock_mode=\"transaction\" is for PostgreSQL "
                                              r".*'oracle' has no transaction-level lock"):
            database_lock(engine, "key", "transaction")
        with pytest.raises(ConfigError, match=r"Schema needs PostgreSQL \(a schema\) or "
                                              r"MySQL/MariaDB \(a database\); oracle has no"):
            scoped(engine, "tenant")
        assert notifier("oracle") is Notifier and not Notifier.can_listen
    finally:
        engine.dispose()


def test_probes_are_found_by_the_driver_package_of_a_dbapi_connection(tmp_path: Any) -> None:
    import sqlite3

    from seedguard.verify import Probe, SQLiteProbe, probe_for

    connection = sqlite3.connect(tmp_path / "x.db")
    try:
        found = probe_for(connection)
        assert type(found) is SQLiteProbe and probe_for(connection) is found
        assert found.identity(connection) == ("sqlite", str((tmp_path / "x.db").resolve()))
    finally:
        connection.close()
    assert type(probe_for(object())) is Probe  # an unknown driver: a probe that knows nothing
