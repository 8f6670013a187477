"""Code checksums: literal values pinned on every Python, and the on-disk cache behind them.

The pinned values are the ones seedguard has recorded in ledgers since the
``ast1`` algorithm shipped: a change to any of them would report every applied
unit as drifted after an upgrade of seedguard or of Python.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from seedguard import checksum, checksum_cache
from seedguard.checksum import code_checksum

# One module, three functions that cover most of the syntax tree's node types
# (arguments of every kind, comprehensions, f-strings with conversions and
# format specs, match, try, with, async for/with, yield, walrus-free
# annotations, bytes, complex and negative constants, slices, lambdas).
PROBE = '''
import asyncio


def decorator(*a):
    return lambda fn: fn


class Role:
    def __init__(self, **kw):
        self.kw = kw


def work(session):
    session.add(Role(name="admin"))


@decorator(1)
def documented(session, *, count: int = 3, ratio=1.5, flag=True, nothing=None) -> None:
    """Docstrings do not count."""
    rows = [{"n": i, "b": b"x", "neg": -1} for i in range(count) if i % 2]
    total = sum(r["n"] for r in rows) ** 2
    label = f"{total!r:>10} of {count}"
    with session.begin_nested():
        session.add_all(Role(name=str(r), label=label) for r in rows)
    try:
        match total:
            case 0 | 1:
                pass
            case [x, *_]:
                del x
            case {"k": v}:
                print(v)
            case _:
                raise ValueError("no")
    except (ValueError, KeyError) as err:
        assert err, "never"
    lam = lambda a, /, b=2, *c, d, **e: (a, b, c, d, e)  # noqa
    return None if lam else ratio and flag and nothing


async def fetch(session, *args, **kwargs):
    global _g
    async with session as s:
        async for item in s.stream(...):
            await asyncio.sleep(0)
            yield item, args[1:2:3], kwargs.get("k", 1j)
    x: "dict[str, int]" = {}
    x |= {"a": 1}
    while not x:
        continue
    else:
        nonlocal_ = {1, 2} - {2}
    return
'''

# Computed by the seedguard release before the checksum cache existed, on
# CPython 3.10, 3.11, 3.12 and 3.13 alike.
PINNED = {
    "work": "ast1:c62ed86eccb365b79311c4c141f3f558bc1fa14d1f34d91105759169441208aa",
    "documented": "ast1:57966f033b8eff4b91a57e8aebcf9e59ce53c2da834e9505665d7752bdd10c64",
    "fetch": "ast1:da20010fbd232b5def7bf2358825cd2458bde5df3fd1b66e51736df4cdbe088d",
}

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "forbid-parse":
    import ast

    def parse(*args, **kwargs):
        raise RuntimeError("ast.parse called")

    ast.parse = parse
import probe_mod
from seedguard.checksum import code_checksum
print(json.dumps({name: code_checksum(getattr(probe_mod, name)) for name in sys.argv[3:]}))
"""


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user cache directory of this test's own, and a process with nothing computed yet."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setattr(checksum, "_computed", {})
    return home


def _probe(directory: Path) -> Any:
    """A fresh module object compiled from the probe written to ``directory``."""
    path = directory / "probe_mod.py"
    path.write_text(PROBE)
    module = types.ModuleType("probe_mod")
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def _entries(home: Path) -> list[Path]:
    found = home / "seedguard" / "checksums"
    return sorted(found.glob("*.json")) if found.is_dir() else []


def _forbid_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*args: Any, **kwargs: Any) -> ast.Module:
        raise AssertionError("ast.parse called on a cache hit")

    monkeypatch.setattr(checksum.ast, "parse", parse)


def test_pinned_checksums_without_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          cache_home: Path) -> None:
    monkeypatch.setattr(checksum_cache, "cache_dir", lambda: None)
    module = _probe(tmp_path)
    assert {name: code_checksum(getattr(module, name)) for name in PINNED} == PINNED


def test_pinned_checksums_from_linecache_lines(tmp_path: Path, cache_home: Path) -> None:
    # Code whose file is not on disk (IPython cells, exec with a registered
    # source) is hashed from linecache, the same way.
    import linecache

    path = str(tmp_path / "not_on_disk.py")
    linecache.cache[path] = (len(PROBE), None, PROBE.splitlines(True), path)
    try:
        namespace: dict[str, Any] = {}
        exec(compile(PROBE, path, "exec"), namespace)
        assert {name: code_checksum(namespace[name]) for name in PINNED} == PINNED
    finally:
        linecache.cache.pop(path, None)
    assert _entries(cache_home) == []


def test_a_miss_stores_and_a_hit_skips_parsing(tmp_path: Path, cache_home: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    module = _probe(tmp_path)
    assert code_checksum(module.work) == PINNED["work"]  # a miss: parsed and stored
    [entry] = _entries(cache_home)
    stored = json.loads(entry.read_text())
    assert stored["path"] == str(tmp_path / "probe_mod.py")
    assert set(PINNED.values()) <= set(stored["checksums"].values())

    monkeypatch.setattr(checksum, "_computed", {})  # as a fresh process would be
    _forbid_parse(monkeypatch)
    assert {name: code_checksum(getattr(module, name)) for name in PINNED} == PINNED


def test_the_key_is_the_content_not_the_mtime(tmp_path: Path, cache_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    module = _probe(tmp_path)
    code_checksum(module.work)
    path = tmp_path / "probe_mod.py"
    # Same content, new mtime (a checkout, touch, an image copy): still a hit.
    os.utime(path, ns=(1, 1))
    monkeypatch.setattr(checksum, "_computed", {})
    with monkeypatch.context() as patched:
        _forbid_parse(patched)
        assert code_checksum(module.fetch) == PINNED["fetch"]
    # Changed content, mtime put back to the old value: a miss, hashed anew.
    stat = path.stat()
    path.write_text(PROBE.replace('name="admin"', 'name="user"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(checksum, "_computed", {})
    changed = code_checksum(module.work)
    assert changed.startswith("ast1:") and changed != PINNED["work"]
    [entry] = _entries(cache_home)  # one entry per source path, overwritten
    assert changed in json.loads(entry.read_text())["checksums"].values()


@pytest.mark.parametrize("corruption", [
    b"",
    b"{not json",
    b"\xff\xfe\x00binary",
    b"[]",
    b'{"format": 1}',
    # Right shape, wrong values: an entry must never be trusted blindly.
    None,
])
def test_a_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path: Path, cache_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    corruption: bytes | None) -> None:
    module = _probe(tmp_path)
    code_checksum(module.work)
    [entry] = _entries(cache_home)
    if corruption is None:
        good = json.loads(entry.read_text())
        good["checksums"] = {key: "sha256:0" for key in good["checksums"]}
        corruption = json.dumps(good).encode()
    entry.write_bytes(corruption)
    monkeypatch.setattr(checksum, "_computed", {})
    assert {name: code_checksum(getattr(module, name)) for name in PINNED} == PINNED
    key = f"{module.work.__code__.co_firstlineno}:work"
    assert json.loads(entry.read_text())["checksums"][key] == PINNED["work"]


def test_an_entry_for_another_interpreter_or_algorithm_is_a_miss(
        tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _probe(tmp_path)
    code_checksum(module.work)
    [entry] = _entries(cache_home)
    for field, value in (("python", "cpython-299"), ("algorithm", "ast0"), ("format", 0)):
        stored = json.loads(entry.read_text())
        key = next(iter(stored["checksums"]))
        stored["checksums"] = {key: f"{stored['algorithm']}:{'0' * 64}"}
        stored[field] = value
        entry.write_text(json.dumps(stored))
        monkeypatch.setattr(checksum, "_computed", {})
        assert code_checksum(module.work) == PINNED["work"], field


@pytest.mark.parametrize("where", ["proc", "file-in-the-way", "no-home"])
def test_an_unwritable_cache_means_no_cache_and_no_noise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    monkeypatch.setattr(checksum, "_computed", {})
    monkeypatch.setattr(checksum_cache, "_disabled_reason_logged", False)
    if where == "proc":
        # /proc refuses new directories even to root: a truly read-only place.
        monkeypatch.setenv("XDG_CACHE_HOME", "/proc/seedguard-cache-test")
    elif where == "file-in-the-way":
        (tmp_path / "home").write_text("a file where the cache directory would go")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    else:
        monkeypatch.setattr(checksum_cache, "cache_dir", lambda: None)
    module = _probe(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="seedguard"):
        for _ in range(3):
            monkeypatch.setattr(checksum, "_computed", {})
            assert {name: code_checksum(getattr(module, name)) for name in PINNED} == PINNED
    # No warning (pytest turns warnings into errors here), nothing above DEBUG,
    # and the reason logged once per process, not per file or per call.
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "checksum cache off" in caplog.records[0].getMessage()


def test_a_second_process_uses_the_cache_and_never_parses(tmp_path: Path) -> None:
    (tmp_path / "probe_mod.py").write_text(PROBE)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache-home"))

    def child(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), mode, *PINNED],
                              env=env, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    # Without an entry, forbidding ast.parse must break the child: the check can fail.
    control = child("forbid-parse")
    assert control.returncode != 0 and "ast.parse called" in control.stderr
    first = child("parse")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == PINNED
    second = child("forbid-parse")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == PINNED


def test_stale_entries_are_pruned_when_a_new_one_is_made(tmp_path: Path,
                                                        cache_home: Path) -> None:
    directory = cache_home / "seedguard" / "checksums"
    directory.mkdir(parents=True)
    old, recent = directory / "old.cpython-0.json", directory / "recent.cpython-0.json"
    old.write_text("{}")
    recent.write_text("{}")
    os.utime(old, (1, 1))
    module = _probe(tmp_path)
    code_checksum(module.work)
    assert not old.exists() and recent.exists() and len(_entries(cache_home)) == 2


def test_functions_without_a_readable_file_fall_back_as_before(cache_home: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(PROBE), "<generated>", "exec"), namespace)
    value = code_checksum(namespace["work"])
    assert value.startswith("code1:")  # bytecode, tagged apart, never cached
    assert _entries(cache_home) == []


def test_a_reloaded_module_is_hashed_from_its_new_source(tmp_path: Path, cache_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    name = f"reload_{tmp_path.name.replace('-', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    try:
        assert code_checksum(module.work) == PINNED["work"]
        path.write_text(PROBE.replace('name="admin"', 'name="user"'))
        importlib.reload(module)  # a reloader does this in-process
        changed = code_checksum(module.work)
        assert changed.startswith("ast1:") and changed != PINNED["work"]
        assert code_checksum(module.fetch) == PINNED["fetch"]
    finally:
        sys.modules.pop(name, None)
