"""Declaring units (``@seed``), registries of them, discovery of seed modules, ordering."""

from __future__ import annotations

import functools
import heapq
import importlib
import inspect
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from types import ModuleType
from typing import Union

from seedguard.errors import ConfigError, DefinitionError
from seedguard.unit import OnChange, SeedFunction, SeedUnit, declared_at

SeedsSpec = Union[str, ModuleType, "Registry", Iterable[SeedUnit], None]


class Registry:
    """An ordered collection of units with unique names.

    Declaration order is kept: it breaks ties when ordering by ``after``.
    """

    def __init__(self, units: Iterable[SeedUnit] = ()) -> None:
        self._units: dict[str, SeedUnit] = {}
        self._lowered: dict[str, str] = {}
        # The units of each set of modules asked for, until the next change.
        self._of_modules: dict[frozenset[str], tuple[SeedUnit, ...]] = {}
        for unit in units:
            self.add(unit)

    def add(self, unit: SeedUnit) -> SeedUnit:
        """Register ``unit``; a re-declaration of the same function replaces it in place.

        Re-declaring happens when a module is imported twice (``python app.py``
        runs it as ``__main__`` and again by name, or a reloader re-imports it):
        that is the same unit, not a duplicate.
        """
        existing = self._units.get(unit.name)
        if existing is not None and (not unit.identity or existing.identity != unit.identity):
            raise DefinitionError(
                f"two units are named {unit.name!r}: {existing.origin} and {unit.origin}; "
                "rename one of them"
            )
        # One rule everywhere: names are compared byte for byte, and names that
        # differ only in case are refused, since a case-insensitive collation
        # (MySQL/MariaDB's default) would call them one.
        lowered = unit.name.lower()
        other = self._lowered.get(lowered)
        if other is not None and other != unit.name:
            raise DefinitionError(
                f"units {other!r} and {unit.name!r} differ only in case "
                f"({self._units[other].origin} and {unit.origin}); rename one of them"
            )
        self._units[unit.name] = unit
        self._lowered[lowered] = unit.name
        self._of_modules.clear()
        return unit

    def get(self, name: str) -> SeedUnit | None:
        return self._units.get(name)

    def __iter__(self) -> Iterator[SeedUnit]:
        return iter(list(self._units.values()))

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, name: object) -> bool:
        return name in self._units

    def of_modules(self, modules: frozenset[str]) -> tuple[SeedUnit, ...]:
        """The units declared in ``modules``, in declaration order."""
        # Asked at every apply() (a warm start-up's selection): filtering 1,000
        # units again each time was a tenth of its cost (bench/targets.py).
        found = self._of_modules.get(modules)
        if found is None:
            found = tuple(unit for unit in self._units.values() if unit.module in modules)
            self._of_modules[modules] = found
        return found

    def clear(self) -> None:
        self._units.clear()
        self._lowered.clear()
        self._of_modules.clear()

    def __repr__(self) -> str:
        return f"Registry({list(self._units)!r})"


default_registry = Registry()
"""Where ``@seed`` and ``data_seed`` register what they declare."""


def seed(
    name: str,
    *,
    version: int = 1,
    after: Iterable[str] = (),
    contexts: Iterable[str] | None = None,
    on_change: OnChange = "warn",
    transactional: bool = True,
    requires_revision: str | None = None,
    description: str | None = None,
    dialects: Iterable[str] | None = None,
    bind: str | None = None,
) -> Callable[[SeedFunction], SeedUnit]:
    """Declare a seed unit and register it in the default registry.

    The decorated function is replaced by its :class:`SeedUnit`, which is still
    callable with a session.

    :param name: the unit's name in the ledger: 1-255 characters of
        ``[A-Za-z0-9_.:-]``, unique among the declared units.
    :param version: an integer >= 1; raising it makes the unit pending again.
    :param after: names of units that must be applied before this one (a
        string is one name).
    :param contexts: the contexts the unit runs in; None: always.
    :param on_change: what a changed checksum of an applied unit means:
        ``"warn"`` (reported as drift), ``"rerun"`` (pending again) or
        ``"error"`` (:class:`~seedguard.DriftError`).
    :param transactional: False for work that cannot run in one transaction;
        it is recorded as running before and applied after.
    :param requires_revision: an alembic revision of the application's that
        must be applied first; until then the unit waits.
    :param description: shown by ``status`` and ``history``; default: the
        function's docstring.
    :param dialects: the databases the unit applies to (some of ``"sqlite"``,
        ``"postgresql"``, ``"mysql"`` (MySQL and MariaDB), ``"mariadb"``; a
        string is one name); None: every database. Elsewhere the unit is not
        applicable: ``status`` says so and the units after it run without it.
    :param bind: a Flask-SQLAlchemy bind key (a key of ``SQLALCHEMY_BINDS``):
        the unit runs on that bind's database, is recorded in that database's
        own ledger under its locks, and ``db.session`` inside it routes as
        Flask-SQLAlchemy routes; None: the default database.
    """
    if isinstance(after, str):
        after = [after]
    if isinstance(contexts, str):
        contexts = [contexts]

    def decorate(fn: SeedFunction) -> SeedUnit:
        origin, identity = declared_at(fn)
        unit = SeedUnit(
            name=name,
            fn=fn,
            version=version,
            after=tuple(after),
            contexts=frozenset(contexts) if contexts is not None else None,
            on_change=on_change,
            transactional=transactional,
            requires_revision=requires_revision,
            description=description if description is not None else _docstring(fn),
            module=getattr(fn, "__module__", "") or "",
            origin=origin,
            identity=identity,
            dialects=dialects,
            bind=bind,
        )
        default_registry.add(unit)
        return unit

    return decorate


def _docstring(fn: SeedFunction) -> str | None:
    # The function's own docstring, cleaned as inspect.getdoc cleans it;
    # getdoc's search of base classes for an inherited one took a tenth of a
    # 1,000-unit module's import, and a seed function inherits none.
    doc = getattr(fn, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


def discover(seeds: SeedsSpec, *, registry: Registry | None = None) -> list[SeedUnit]:
    """The units ``seeds`` selects, in declaration order (not yet ordered by ``after``)."""
    registry = registry if registry is not None else default_registry
    if seeds is None:
        return list(registry)
    if isinstance(seeds, Registry):
        return list(seeds)
    if isinstance(seeds, str):
        modules = _import_tree(seeds)
        return _units_of(registry, modules)
    if isinstance(seeds, ModuleType):
        return _units_of(registry, _import_tree(seeds.__name__))
    units = list(seeds)
    for unit in units:
        if not isinstance(unit, SeedUnit):
            raise ConfigError(f"seeds must hold SeedUnit objects, got {unit!r}")
    return list(Registry(units))


def order(units: Iterable[SeedUnit]) -> list[SeedUnit]:
    """Topological order by ``after``; ties keep declaration order, so it is stable.

    Raises DefinitionError for a dependency that is not among ``units`` or a cycle.
    """
    # Memoised on the units themselves (compared by identity): a warm start-up
    # orders the same selection again and again.
    return list(_order(tuple(units)))


def dependencies(units: Iterable[SeedUnit]) -> dict[str, tuple[str, ...]]:
    """Each unit's dependencies: its ``after`` plus the units that fill a table it reads.

    A data seed whose refs read a table that another of ``units`` fills runs
    after that one without an explicit ``after``.
    """
    units = list(units)
    fillers: dict[str, list[str]] = {}
    for unit in units:
        for table in unit.fills:
            fillers.setdefault(table, []).append(unit.name)
    deps: dict[str, tuple[str, ...]] = {}
    for unit in units:
        implicit = [name for table in sorted(unit.reads) for name in fillers.get(table, ())
                    if name != unit.name and name not in unit.after]
        deps[unit.name] = (*unit.after, *dict.fromkeys(implicit))
    return deps


@functools.lru_cache(maxsize=16)
def _order(units: tuple[SeedUnit, ...]) -> tuple[SeedUnit, ...]:
    if not any(unit.after or unit.reads for unit in units):
        return units  # no dependency at all: declaration order (most apps)
    position = {unit.name: index for index, unit in enumerate(units)}
    dependents: dict[str, list[str]] = {unit.name: [] for unit in units}
    waiting_on: dict[str, int] = {}
    all_deps = dependencies(units)
    for unit in units:
        for dep in unit.after:
            if dep not in position:
                raise DefinitionError(
                    f"unit {unit.name!r} depends on {dep!r}, which is not declared among "
                    "the selected seeds; check the name or the seeds path"
                )
        deps = set(all_deps[unit.name])
        waiting_on[unit.name] = len(deps)
        for dep in deps:
            dependents[dep].append(unit.name)
    ready = [position[name] for name, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[SeedUnit] = []
    while ready:
        unit = units[heapq.heappop(ready)]
        ordered.append(unit)
        for name in dependents[unit.name]:
            waiting_on[name] -= 1
            if waiting_on[name] == 0:
                heapq.heappush(ready, position[name])
    if len(ordered) != len(units):
        cycle = _find_cycle({u.name: all_deps[u.name] for u in units if waiting_on[u.name] > 0})
        raise DefinitionError(
            f"dependency cycle among units: {' -> '.join(cycle)} (from after= and from data "
            "seeds' refs to tables other data seeds fill); break the cycle")
    return tuple(ordered)


def with_dependencies(units: list[SeedUnit], target: str) -> list[SeedUnit]:
    """``target`` and everything it depends on, keeping the order of ``units``."""
    by_name = {unit.name: unit for unit in units}
    if target not in by_name:
        raise ConfigError(
            f"target {target!r} is not a selected unit; known units: "
            f"{', '.join(sorted(by_name)) or 'none'}"
        )
    needed: set[str] = set()
    stack = [target]
    deps = dependencies(units)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(deps[name])
    return [unit for unit in units if unit.name in needed]


def active(units: Iterable[SeedUnit], contexts: Collection[str]) -> list[SeedUnit]:
    """The units that run when ``contexts`` are active.

    Raises DefinitionError when a unit that runs depends on one the contexts
    leave out: running it alone would break the promise that a unit runs only
    after what it lists in ``after``.
    """
    return list(_active(tuple(units), frozenset(contexts)))


@functools.lru_cache(maxsize=16)
def _active(units: tuple[SeedUnit, ...], contexts: frozenset[str]) -> tuple[SeedUnit, ...]:
    # Memoised like _order: a warm start-up selects the same units again and again.
    selected = [unit for unit in units if unit.runs_in(contexts)]
    chosen = {unit.name for unit in selected}
    by_name = {unit.name: unit for unit in units}
    for unit in selected:
        for dep in unit.after:
            left_out = by_name.get(dep)
            if dep not in chosen and left_out is not None:
                raise DefinitionError(
                    f"unit {unit.name!r} depends on {dep!r}, which runs only in context(s) "
                    f"{describe_contexts(left_out.contexts)}, and the active context(s) are "
                    f"{describe_contexts(contexts)}; give {dep!r} the contexts of "
                    f"{unit.name!r} ({describe_contexts(unit.contexts)}), or activate one of "
                    f"{describe_contexts(left_out.contexts)}"
                )
    return tuple(selected)


def describe_contexts(contexts: Collection[str] | None) -> str:
    """Contexts for a message: "dev, test", "every context" (None) or "none" (empty)."""
    if contexts is None:
        return "every context"
    return ", ".join(sorted(contexts)) or "none"


def declared_contexts(units: Iterable[SeedUnit]) -> set[str]:
    """Every context some unit among ``units`` declares."""
    return {name for unit in units for name in (unit.contexts or ())}


def _import_tree(path: str) -> list[str]:
    """Import ``path`` and, if it is a package, every submodule in sorted order."""
    module = _import(path, path)
    names = [module.__name__]
    search = getattr(module, "__path__", None)
    if search is not None:
        import pkgutil

        from seedguard.sqlfiles import declare_package

        # *.sql files in a package's directories are its units too.
        declare_package(module, default_registry)
        found = sorted(info.name for info in pkgutil.walk_packages(search, prefix=path + "."))
        for name in found:
            sub = _import(name, path)
            if hasattr(sub, "__path__"):
                declare_package(sub, default_registry)
            names.append(name)
    return names


def _import(name: str, requested: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise ConfigError(
                f"seeds module {name!r} not found; check --seeds / SEEDGUARD_SEEDS / "
                f"[tool.seedguard] seeds, and that the directory holding it is on sys.path "
                f"(current directory: run from the project root)"
            ) from err
        raise ConfigError(f"importing seeds module {name!r} failed: {err}") from err
    except DefinitionError as err:
        # A unit declared wrongly is a definition error wherever it is found,
        # not a configuration error about importing.
        raise DefinitionError(f"{err} (in seeds module {name!r})") from err
    except Exception as err:
        raise ConfigError(
            f"importing seeds module {name!r} (from {requested!r}) failed: "
            f"{type(err).__name__}: {err}"
        ) from err


def _units_of(registry: Registry, modules: list[str]) -> list[SeedUnit]:
    wanted = set(modules)
    # A script run as `python app.py` declares its units under __main__.
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    for name in modules:
        module = sys.modules.get(name)
        if main_file and module is not None and getattr(module, "__file__", None) == main_file:
            wanted.add("__main__")
    return list(registry.of_modules(frozenset(wanted)))


def _find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """One cycle in ``graph`` (every node in it is on or behind a cycle)."""
    start = next(iter(graph))
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in graph[node] if dep in graph)
    return [*path[seen[node]:], node]
