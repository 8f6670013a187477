"""Which registered class runs on which test database: the parameters of the suites.

Each registry's dialects are mapped onto the test databases that speak them
(a MariaDB server answers to the ``mysql`` dialect through PyMySQL); a class
registered for a dialect with no test database is a case that skips, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seedguard.bydialect import Registry

# The test database each dialect runs on (conftest's kinds).
DATABASE_OF = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb",
               "mariadb": "mariadb"}


@dataclass(frozen=True)
class Case:
    """One registered class on one test database."""

    cls: type[Any]
    dialect: str
    kind: str | None  # None: no test database speaks the dialect
    mode: str = "session"

    @property
    def id(self) -> str:
        suffix = "" if self.mode == "session" else f"-{self.mode}"
        return f"{self.cls.__name__}-{self.kind or self.dialect}{suffix}"


def cases(registry: Registry[Any], mode: str = "session") -> list[Case]:
    """One case per class and test database, whatever dialects lead to it."""
    found: dict[tuple[type[Any], str | None], Case] = {}
    for dialect in registry:
        cls = registry[dialect]
        kind = DATABASE_OF.get(dialect)
        found.setdefault((cls, kind if kind is not None else dialect),
                         Case(cls, dialect, kind, mode))
    return list(found.values())


def database(case: Case, tmp_path: Path) -> Iterator[Any]:
    """A fresh database of the case's kind (conftest's ``make_database``)."""
    from conftest import make_database, selected_databases

    if case.kind is None:
        pytest.skip(f"no test database for the {case.dialect!r} dialect of {case.cls.__name__}")
    if case.kind not in selected_databases():
        pytest.skip(f"{case.kind} not in SEEDGUARD_TEST_DATABASES")
    yield from make_database(case.kind, tmp_path)
