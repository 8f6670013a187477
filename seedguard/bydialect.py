"""Classes keyed by dialect name: one registry style for every per-database fact.

Locks, bulk writers, ledger quirks, transaction probes, schema scopes and
notifiers each have one class per database. A family's base class names its
:class:`Registry`; each backend class lists the dialects it serves in
``dialects`` and is registered by being defined, as alembic's ``ddl`` impls
are by ``__dialect__`` (no ``if dialect.name`` chains in shared code)::

    WRITERS: Registry[Writer] = Registry("bulk writer", lazy={
        "mysql": "seedguard.upsert.mysql"})

    class Writer(ByDialect):
        registry = WRITERS

    class MySQLWriter(Writer):
        dialects = ("mysql", "mariadb")

A backend module that is costly to import (a driver's helpers) is named in
``lazy`` and imported the first time its dialect is asked for, so
``import seedguard`` and a warm start-up never pay for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """The classes of one family, by dialect name.

    :param family: what the classes are, for messages ("database lock").
    :param lazy: dialect name -> module that registers its class when
        imported, for backends imported on first use only.
    """

    def __init__(self, family: str, *, lazy: Mapping[str, str] | None = None) -> None:
        self.family = family
        self._classes: dict[str, type[T]] = {}
        self._lazy = dict(lazy or {})

    def add(self, dialect: str, cls: type[T]) -> None:
        """Register ``cls`` for ``dialect`` (a later class for the same dialect wins)."""
        self._classes[dialect] = cls

    def get(self, dialect: str) -> type[T] | None:
        """The class for ``dialect``, importing its module if it is a lazy one; None if none."""
        found = self._classes.get(dialect)
        if found is None and dialect in self._lazy:
            importlib.import_module(self._lazy[dialect])
            found = self._classes.get(dialect)
        return found

    def require(self, dialect: str, error: Callable[[str], Exception]) -> type[T]:
        """The class for ``dialect``; raises ``error(message)`` naming the supported ones."""
        found = self.get(dialect)
        if found is None:
            raise error(
                f"seedguard has no {self.family} for the {dialect!r} dialect; supported: "
                f"{', '.join(self.names())}"
            )
        return found

    def names(self) -> list[str]:
        """Every dialect with a class, registered or lazy, sorted."""
        return sorted(set(self._classes) | set(self._lazy))

    def __getitem__(self, dialect: str) -> type[T]:
        """The class for ``dialect``, as a dict would give it (KeyError if none)."""
        found = self.get(dialect)
        if found is None:
            raise KeyError(dialect)
        return found

    def __contains__(self, dialect: object) -> bool:
        return dialect in self._classes or dialect in self._lazy

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class ByDialect:
    """Base of a family of per-dialect classes; subclasses register themselves.

    The family's root sets ``registry``; a subclass that declares
    ``dialects`` is added to it for each name. A subclass that inherits
    ``dialects`` without declaring its own is not registered again (it is a
    variant its module chooses, not the dialect's class).
    """

    registry: ClassVar[Registry[Any] | None] = None
    dialects: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.registry is not None and "dialects" in cls.__dict__:
            for dialect in cls.dialects:
                cls.registry.add(dialect, cls)
