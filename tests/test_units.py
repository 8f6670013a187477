"""Declaring units: validation, registries, discovery, ordering, checksums, errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _support import unit, write_module

import seedguard
from seedguard import (
    ConfigError,
    DefinitionError,
    DriftError,
    LockTimeout,
    Registry,
    SeedFailed,
    SeedguardError,
)
from seedguard.checksum import code_checksum
from seedguard.registry import default_registry, discover, order, with_dependencies


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "x" * 256, "quote'", None, 3])
def test_invalid_names_are_refused(name: Any) -> None:
    with pytest.raises(DefinitionError, match="invalid unit name"):
        seedguard.seed(name)(lambda session: None)
    assert len(default_registry) == 0


@pytest.mark.parametrize("name", ["roles", "a.b:c-d_e", "X" * 255, "0"])
def test_valid_names(name: str) -> None:
    assert unit(name).name == name


@pytest.mark.parametrize("version", [0, -1, 1.5, "2", True, None])
def test_invalid_versions_are_refused(version: Any) -> None:
    with pytest.raises(DefinitionError, match="version must be an integer >= 1"):
        seedguard.seed("roles", version=version)(lambda session: None)


def test_invalid_on_change_and_self_dependency() -> None:
    with pytest.raises(DefinitionError, match="on_change"):
        seedguard.seed("a", on_change="ignore")(lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="itself"):
        seedguard.seed("a", after=["a"])(lambda s: None)


def test_seed_registers_and_returns_a_callable_unit() -> None:
    calls: list[Any] = []

    @seedguard.seed("roles", version=2, after="base", contexts="dev", description="Roles.")
    def roles(session: Any) -> None:
        calls.append(session)

    assert isinstance(roles, seedguard.SeedUnit)
    assert (roles.name, roles.version, roles.after, roles.contexts) == (
        "roles", 2, ("base",), frozenset({"dev"}))
    assert roles.description == "Roles."
    assert list(default_registry) == [roles]
    roles("session")
    assert calls == ["session"]


def test_two_units_with_one_name_raise_naming_both_places() -> None:
    @seedguard.seed("roles")
    def first(session: Any) -> None: ...

    with pytest.raises(DefinitionError) as info:

        @seedguard.seed("roles")
        def second(session: Any) -> None: ...

    message = str(info.value)
    assert "first" in message and "second" in message and "test_units.py" in message


def test_redeclaring_the_same_function_replaces_it(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"redeclare_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, name, """
        import seedguard
        @seedguard.seed("roles")
        def roles(session):
            pass
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    import importlib

    importlib.reload(module)  # a reloader or `python app.py` + `import app` does this
    assert [u.name for u in default_registry] == ["roles"]
    assert default_registry.get("roles") is module.roles


def test_order_is_topological_with_declaration_order_ties() -> None:
    units = [unit("c", after=["a"]), unit("b"), unit("a"), unit("d", after=["b", "c"]),
             unit("e")]
    assert [u.name for u in order(units)] == ["b", "a", "c", "d", "e"]
    assert [u.name for u in order(units)] == [u.name for u in order(list(units))]


def test_unknown_dependency_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="'a' depends on 'missing'"):
        order([unit("a", after=["missing"])])


def test_cycle_is_a_definition_error_naming_it() -> None:
    units = [unit("a", after=["c"]), unit("b", after=["a"]), unit("c", after=["b"]), unit("d")]
    with pytest.raises(DefinitionError, match="cycle") as info:
        order(units)
    assert all(name in str(info.value) for name in "abc")


def test_cycle_is_raised_before_anything_runs(tmp_path: Path) -> None:
    ran: list[str] = []
    units = [unit("ok", fn=lambda s: ran.append("ok")), unit("a", after=["b"]),
             unit("b", after=["a"])]
    with pytest.raises(DefinitionError):
        seedguard.apply(f"sqlite:///{tmp_path / 'x.db'}", seeds=units)
    assert ran == []
    assert not (tmp_path / "x.db").exists() or (tmp_path / "x.db").stat().st_size == 0


def test_with_dependencies_unknown_target() -> None:
    with pytest.raises(ConfigError, match="target 'nope'"):
        with_dependencies([unit("a")], "nope")


def test_discover_accepts_registry_module_list_and_path(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry([unit("x"), unit("y")])
    assert [u.name for u in discover(reg)] == ["x", "y"]
    assert [u.name for u in discover([unit("z")])] == ["z"]
    name = f"mod_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, name, """
        import seedguard
        @seedguard.seed("from-module")
        def unit(session):
            pass
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    assert [u.name for u in discover(module)] == ["from-module"]
    assert [u.name for u in discover(name)] == ["from-module"]
    assert [u.name for u in discover(None)] == ["from-module"]


def test_discover_rejects_non_units() -> None:
    with pytest.raises(ConfigError, match="SeedUnit"):
        discover(["roles"])  # type: ignore[list-item]


def test_missing_seeds_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="seeds module 'no_such_seeds_pkg' not found"):
        discover("no_such_seeds_pkg")


def test_seeds_module_that_raises_on_import(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"broken_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, name, "raise RuntimeError('bad seeds')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="bad seeds") as info:
        discover(name)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_seeds_module_with_a_missing_import_names_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"needs_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, name, "import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="not_installed_dependency_xyz"):
        discover(name)


# -- checksums ---------------------------------------------------------------------


def _checksum_of(source: str) -> str:
    namespace: dict[str, Any] = {"decorator": lambda *args: (lambda fn: fn)}
    path = Path(__file__).parent / "__checksum_probe__.py"
    # Compile with a real file name so inspect can find the source.
    import linecache

    linecache.cache[str(path)] = (len(source), None, source.splitlines(True), str(path))
    exec(compile(textwrap.dedent(source), str(path), "exec"), namespace)
    return code_checksum(namespace["work"])


BASE = '''
def work(session):
    session.add(Role(name="admin"))
'''


@pytest.mark.parametrize("variant", [
    '''
@decorator(1)
def work(session):
    """Docstrings do not count."""
    # nor comments
    session.add(
        Role(name="admin"),   # nor layout
    )
''',
    '''
def work(session):

    session.add(Role(name='admin'))
''',
])
def test_checksum_ignores_comments_docstrings_decorators_formatting(variant: str) -> None:
    assert _checksum_of(variant) == _checksum_of(BASE)


@pytest.mark.parametrize("variant", [
    'def work(session):\n    session.add(Role(name="user"))\n',
    'def work(session):\n    session.merge(Role(name="admin"))\n',
    'def work(s):\n    s.add(Role(name="admin"))\n',
    'def work(session):\n    session.add(Role(name="admin"))\n    session.flush()\n',
])
def test_checksum_changes_with_logic(variant: str) -> None:
    assert _checksum_of(variant) != _checksum_of(BASE)


def test_checksum_is_versioned_and_stable_across_processes(tmp_path: Path) -> None:
    write_module(tmp_path, "stable_mod", BASE)
    script = ("import stable_mod; from seedguard.checksum import code_checksum; "
              "print(code_checksum(stable_mod.work))")
    outputs = {
        subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, check=True, timeout=60).stdout.strip()
        for _ in range(2)
    }
    assert len(outputs) == 1
    checksum = outputs.pop()
    assert checksum.startswith("ast1:") and len(checksum) == len("ast1:") + 64
    # Pinned to the literal value ledgers hold (more in test_checksum.py):
    # changing the algorithm without a new tag would report every applied unit
    # as drifted after an upgrade of seedguard.
    assert checksum == "ast1:c62ed86eccb365b79311c4c141f3f558bc1fa14d1f34d91105759169441208aa"
    assert _checksum_of(BASE) == checksum


# -- errors ------------------------------------------------------------------------


def test_error_tree() -> None:
    for cls in (ConfigError, DefinitionError, LockTimeout, SeedFailed, DriftError):
        assert issubclass(cls, SeedguardError)
    assert issubclass(LockTimeout, TimeoutError)


def module_level_work(session: Any) -> None:
    pass


module_unit = seedguard.SeedUnit(name="pickled", fn=module_level_work, module=__name__)


def test_errors_pickle_with_their_attributes() -> None:
    errors: list[SeedguardError] = [
        ConfigError("no database"),
        DefinitionError("bad"),
        LockTimeout("slow", lock="/tmp/x.lock", holder="pid 1 on h since t"),
        SeedFailed("failed", unit=unit("u")),
        DriftError("drift", drifted=[]),
    ]
    for err in errors:
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err) and str(clone) == str(err)
    timeout = pickle.loads(pickle.dumps(errors[2]))
    assert isinstance(timeout, LockTimeout)
    assert (timeout.lock, timeout.holder) == ("/tmp/x.lock", "pid 1 on h since t")
    failed = pickle.loads(pickle.dumps(errors[3]))
    assert isinstance(failed, SeedFailed) and failed.unit.name == "u"


def test_seed_failed_with_a_decorated_unit_pickles_by_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pickled_{tmp_path.name.replace('-', '_')}"
    write_module(tmp_path, name, """
        import seedguard
        @seedguard.seed("roles")
        def roles(session):
            pass
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    clone = pickle.loads(pickle.dumps(SeedFailed("x", unit=module.roles)))
    assert clone.unit is module.roles
