"""One registry style for per-dialect classes: registered by being defined, lazy on first use."""

from __future__ import annotations

import sys

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
