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
from _support import file_lock_held, unit

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


# -- an error that names a setting: each front end spells it ---------------------------------


def test_an_error_naming_a_setting_pickles_with_it() -> None:
    from seedguard.settings import as_flask_key, as_option

    err = errors.LockTimeout("gave up; raise {lock_timeout}", lock="k", holder="h",
                             settings=["lock_timeout"])
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) == "gave up; raise lock_timeout="
    assert clone.settings == ("lock_timeout",) and (clone.lock, clone.holder) == ("k", "h")
    assert clone.spelled(as_option) == "gave up; raise --lock-timeout"
    assert clone.spelled(as_flask_key) == "gave up; raise SEEDGUARD_LOCK_TIMEOUT"
    plain = pickle.loads(pickle.dumps(errors.ConfigError("set {lock_path}",
                                                         settings=["lock_path"])))
    assert plain.spelled(as_option) == "set --lock-path" and str(plain) == "set lock_path="
    # A message without settings is left as it is, braces included.
    assert errors.ConfigError("got {'a': 1}").spelled(as_option) == "got {'a': 1}"


def test_a_lock_timeout_names_the_setting_in_each_front_ends_words(tmp_path: Any) -> None:
    from seedguard.settings import as_flask_key, as_option

    lock = tmp_path / "held.lock"
    with file_lock_held(lock), pytest.raises(errors.LockTimeout) as info:
        seedguard.apply(f"sqlite:///{tmp_path / 'a.db'}", seeds=[unit("held-roles")],
                        lock_path=str(lock), lock_timeout=0.2)
    err = info.value
    assert err.settings == ("lock_timeout",)
    assert str(err).endswith("wait for it to finish or raise lock_timeout=")
    assert err.spelled(as_option).endswith("raise --lock-timeout")
    assert err.spelled(as_flask_key).endswith("raise SEEDGUARD_LOCK_TIMEOUT")
    assert pickle.loads(pickle.dumps(err)).spelled(as_option) == err.spelled(as_option)


def test_a_lease_longer_than_the_wait_names_both_settings(tmp_path: Any) -> None:
    from seedguard.config import resolve
    from seedguard.settings import as_flask_key, as_option

    with pytest.raises(errors.ConfigError) as info:
        resolve("sqlite://", lease=60, lock_timeout=30, cwd=tmp_path)
    err = info.value
    assert err.settings == ("lock_timeout", "lease")
    assert str(err).endswith("raise lock_timeout= or lower lease=")
    assert err.spelled(as_option).endswith("raise --lock-timeout or lower --lease")
    assert err.spelled(as_flask_key).endswith(
        "raise SEEDGUARD_LOCK_TIMEOUT or lower SEEDGUARD_LEASE")


def test_a_flask_app_is_told_its_config_keys(tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    flask = pytest.importorskip("flask")
    from seedguard.flask import SeedGuard

    monkeypatch.chdir(tmp_path)
    app = flask.Flask("lease_app")
    app.config.update(SEEDGUARD_URL=f"sqlite:///{tmp_path / 'app.db'}",
                      SEEDGUARD_LEASE=60, SEEDGUARD_LOCK_TIMEOUT=10)
    with pytest.raises(errors.ConfigError) as info:
        SeedGuard(app, seeds=[unit("flask-roles")], apply_on_start=True)
    message = str(info.value)
    assert "raise SEEDGUARD_LOCK_TIMEOUT or lower SEEDGUARD_LEASE" in message, message
    assert "lock_timeout=" not in message
