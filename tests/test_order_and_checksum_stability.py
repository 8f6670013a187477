"""Property-based tests (hypothesis): ordering and checksum stability.

Ordering: for any dependency DAG in any declaration order, ``order()`` gives
a topological order, the same one every time, namely the one that always
takes the earliest-declared unit whose dependencies are done; appending a
unit nobody depends on never reorders the others; any cycle is refused.

Checksums: a unit body rendered with different formatting, comments, blank
lines, docstring and decorators has one checksum; changing any constant or
any called name changes it.
"""

from __future__ import annotations

import itertools
import linecache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seedguard import DefinitionError
from seedguard.checksum import code_checksum
from seedguard.registry import order
from seedguard.unit import SeedUnit

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _noop(session: Any) -> None:
    del session


def _unit(name: str, after: tuple[str, ...]) -> SeedUnit:
    return SeedUnit(name=name, fn=_noop, after=after, origin="p", identity=f"p:{name}")


@st.composite
def dags(draw: Any) -> list[SeedUnit]:
    """A random DAG (edges only from a random topological rank), declared in random order."""
    n = draw(st.integers(min_value=1, max_value=14))
    names = draw(st.permutations([f"u{i}" for i in range(n)]))  # rank -> name
    after: dict[str, tuple[str, ...]] = {}
    for rank, name in enumerate(names):
        deps = draw(st.sets(st.sampled_from(names[:rank]), max_size=3)) if rank else set()
        after[name] = tuple(sorted(deps))
    declared = draw(st.permutations(list(names)))
    return [_unit(name, after[name]) for name in declared]


def reference_order(units: list[SeedUnit]) -> list[str]:
    """The specification, quadratic and obvious: earliest-declared ready unit first."""
    done: list[str] = []
    left = list(units)
    while left:
        ready = next(u for u in left if all(dep in done for dep in u.after))
        done.append(ready.name)
        left.remove(ready)
    return done


@SETTINGS
@given(dags())
def test_order_is_topological_stable_and_matches_the_specification(units: list[SeedUnit]) -> None:
    ordered = [u.name for u in order(units)]
    assert sorted(ordered) == sorted(u.name for u in units)
    position = {name: i for i, name in enumerate(ordered)}
    for u in units:
        for dep in u.after:
            assert position[dep] < position[u.name]
    assert [u.name for u in order(units)] == ordered  # same every time
    assert [u.name for u in order(list(units))] == ordered
    assert ordered == reference_order(units)


@SETTINGS
@given(dags(), st.data())
def test_appending_an_independent_unit_never_reorders_the_others(units: list[SeedUnit],
                                                                data: Any) -> None:
    names = [u.name for u in units]
    deps = data.draw(st.sets(st.sampled_from(names), max_size=3))
    extra = _unit("extra", tuple(sorted(deps)))
    before = [u.name for u in order(units)]
    after = [u.name for u in order([*units, extra]) if u.name != "extra"]
    assert after == before


@SETTINGS
@given(dags(), st.data())
def test_any_cycle_is_refused(units: list[SeedUnit], data: Any) -> None:
    ordered = [u.name for u in order(units)]
    # An edge from an earlier unit back to a later one (or to itself via a chain) closes a cycle.
    by_name = {u.name: u for u in units}
    path = _some_path(by_name, ordered, data)
    if path is None:
        return
    first, last = path
    broken = [
        _unit(u.name, (*u.after, last)) if u.name == first else u for u in units
    ]
    with pytest.raises(DefinitionError, match="cycle"):
        order(broken)


def _some_path(by_name: dict[str, SeedUnit], ordered: list[str],
               data: Any) -> tuple[str, str] | None:
    """(a, b) where b (transitively) depends on a, so that a after b makes a cycle."""
    pairs = []
    for name in ordered:
        seen: set[str] = set()
        stack = list(by_name[name].after)
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(by_name[dep].after)
        pairs.extend((dep, name) for dep in seen)
    if not pairs:
        return None
    return data.draw(st.sampled_from(sorted(pairs)))


# -- checksums ------------------------------------------------------------------------

CALLS = ["add_role", "insert_row", "sa.text", "session.execute", "make_user"]
constants = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.text(alphabet="abcxyz _-", max_size=8),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
statements = st.lists(
    st.tuples(st.sampled_from(CALLS), st.lists(constants, min_size=1, max_size=3)),
    min_size=1, max_size=5,
)

_counter = itertools.count()


def _compile(source: str) -> Any:
    """A function from ``source`` that inspect.getsource can read back (via linecache)."""
    filename = f"<seedguard-property-{next(_counter)}>"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    namespace: dict[str, Any] = {"decorate": lambda fn: fn}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["unit"]


def plain(body: list[tuple[str, list[Any]]]) -> str:
    lines = ["def unit(session):"]
    for index, (call, args) in enumerate(body):
        lines.append(f"    v{index} = {call}({', '.join(repr(a) for a in args)})")
    return "\n".join(lines) + "\n"


def reformatted(body: list[tuple[str, list[Any]]]) -> str:
    lines = ["# a comment above", "@decorate", "def unit(", "    session,", "):",
             '    """A docstring does not count."""', ""]
    for index, (call, args) in enumerate(body):
        lines.append(f"    # step {index}")
        lines.append(f"    v{index} = {call}(")
        lines.extend(f"        {a!r},  # argument" for a in args)
        lines.append("    )")
        lines.append("")
    return "\n".join(lines) + "\n"


def _different(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0 if abs(value) < 1e15 else value * 2
    return value + "!"


@SETTINGS
@given(statements)
def test_formatting_comments_docstring_and_decorators_never_change_a_checksum(
        body: list[tuple[str, list[Any]]]) -> None:
    a = code_checksum(_compile(plain(body)))
    b = code_checksum(_compile(reformatted(body)))
    assert a == b
    assert a.startswith("ast1:")


@SETTINGS
@given(statements, st.data())
def test_any_changed_constant_or_call_changes_the_checksum(
        body: list[tuple[str, list[Any]]], data: Any) -> None:
    original = code_checksum(_compile(plain(body)))
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    call, args = body[index]
    if data.draw(st.booleans()):
        position = data.draw(st.integers(min_value=0, max_value=len(args) - 1))
        changed_args = list(args)
        changed_args[position] = _different(args[position])
        changed = [*body[:index], (call, changed_args), *body[index + 1:]]
    else:
        other = data.draw(st.sampled_from([c for c in CALLS if c != call]))
        changed = [*body[:index], (other, args), *body[index + 1:]]
    assert code_checksum(_compile(plain(changed))) != original
    assert code_checksum(_compile(reformatted(changed))) != original
