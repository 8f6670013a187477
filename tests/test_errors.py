"""Every error seedguard raises pickles with its message, attributes and class.

Errors cross process boundaries (multiprocessing, pytest-xdist, a worker's
failure reported to its parent), so each one, not only the common ones, must
survive pickling. The list is taken from the module, so a new error class
without a case here fails the test.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest
from _support import unit

import seedguard
from seedguard import errors
from seedguard.downgrade import ChangedRow
from seedguard.result import Drift

UNIT = unit("roles", version=2)

# Class name -> (positional args, keyword attributes) to build and compare.
CASES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "SeedguardError": (("anything",), {}),
    "ConfigError": (("no database configured",), {}),
    "DefinitionError": (("two units are named 'roles'",), {}),
    "LockTimeout": (("gave up after 60 s",),
                    {"lock": "/tmp/app.db.seedguard.lock", "holder": "pid 7 on h since t"}),
    "SeedFailed": (("unit 'roles' v2 failed",), {"unit": UNIT, "rolled_back": True}),
    "UnitBlocked": (("unit 'roles' v2 was interrupted",), {"unit": UNIT}),
    "UnitEscape": (("unit 'roles' v2: a write on another connection was refused",), {}),
    "DriftError": (("checksum changed",),
                   {"drifted": [Drift("roles", 2, "ast1:a", "ast1:b", UNIT)]}),
    "DataError": (("bad value",), {"path": "roles.csv", "line": 3, "column": "name"}),
    "WaitTimeout": (("still pending after 5 s",), {"pending": ["roles"], "timeout": 5.0}),
    "PlanStale": (("the plan no longer matches",), {"changes": ["roles: checksum changed"]}),
    "DowngradeRefused": (("1 row(s) it wrote changed since",),
                         {"name": "colors", "rows": [ChangedRow("colors", "red", "changed",
                                                                {"hex": ("#f00", "#e00")})]}),
}


def _error_classes() -> list[type[BaseException]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.SeedguardError) and cls.__module__ == errors.__name__]


def test_every_error_class_has_a_case() -> None:
    assert sorted(cls.__name__ for cls in _error_classes()) == sorted(CASES)


def test_every_error_class_is_public() -> None:
    for cls in _error_classes():
        assert getattr(seedguard, cls.__name__) is cls


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_pickles_with_its_attributes(name: str) -> None:
    cls = getattr(errors, name)
    args, attributes = CASES[name]
    err = cls(*args, **attributes)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is cls
    assert str(clone) == str(err) and clone.args == err.args
    for attribute, value in attributes.items():
        copied = getattr(clone, attribute)
        if attribute == "unit":
            assert copied.key == value.key  # a unit built here pickles as a stand-in
        elif attribute == "drifted":
            assert [(d.name, d.version, d.recorded, d.current) for d in copied] == \
                [(d.name, d.version, d.recorded, d.current) for d in value]
        else:
            assert copied == value
    assert isinstance(clone, errors.SeedguardError)
    if name == "LockTimeout":
        assert isinstance(clone, TimeoutError)
    if name == "DataError":
        assert isinstance(clone, ValueError)
