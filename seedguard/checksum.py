"""Checksums of seed code and seed data, stable across seedguard and Python releases.

A checksum is ``"<algorithm>:<hex>"``. The algorithm tag is part of the value so
that a later seedguard can change how it hashes without reporting every applied
unit as drifted: it compares only checksums of the same algorithm.

Code checksums hash the function's syntax tree, not its text, so comments,
blank lines, formatting, the docstring and the decorators do not count. The tree
is serialised by hand rather than with ``ast.dump``, whose output changed in
Python 3.13 (empty fields are omitted) and would otherwise shift every checksum
on an interpreter upgrade. Fields that are ``None`` or empty are skipped for the
same reason: new Python versions add fields (``type_params`` in 3.12) that are
empty for old code.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import linecache
import os
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from seedguard import checksum_cache

CODE_ALGORITHM = "ast1"
DATA_ALGORITHM = "sha256"
# Used when a function's source cannot be read (defined in a REPL or by exec):
# bytecode is not stable across Python versions, so it is tagged apart.
BYTECODE_ALGORITHM = "code1"

# Position attributes and the pieces that must not count.
_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "kind"})


def code_checksum(fn: Callable[..., Any]) -> str:
    """Checksum of a function's code: its arguments and body, without docstring or decorators."""
    return code_checksums([fn])[0]


def code_checksums(fns: Iterable[Callable[..., Any]]) -> list[str]:
    """:func:`code_checksum` of each function, in order.

    The functions of one module look their file up once, not once each: a
    1,000-unit seeds module spent half of its checksums' time in those
    lookups at every start-up (bench/targets.py, first apply()).
    """
    found: list[str] = []
    current: tuple[str, object] | None = None
    in_file: dict[str, str] | None = None
    for fn in fns:
        code = getattr(fn, "__code__", None)
        checksum = None
        if code is not None:
            namespace = getattr(fn, "__globals__", None)
            if current is None or current[0] != code.co_filename or current[1] is not namespace:
                current = (code.co_filename, namespace)
                in_file = _file_checksums(code.co_filename, namespace)
            checksum = in_file.get(f"{code.co_firstlineno}:{fn.__name__}") if in_file else None
        found.append(checksum if checksum is not None else _checksum_apart(fn))
    return found


def _checksum_apart(fn: Callable[..., Any]) -> str:
    """A function its file's checksums do not hold: from the source inspect finds, else
    from its bytecode (tagged apart: bytecode is not stable across Python versions)."""
    node = _function_node(fn)
    if node is not None:
        return _node_checksum(node)
    code = getattr(fn, "__code__", None)
    payload = repr((code.co_code, code.co_consts, code.co_names)) if code else repr(fn)
    return f"{BYTECODE_ALGORITHM}:{hashlib.sha256(payload.encode()).hexdigest()}"


def _node_checksum(node: FunctionNode) -> str:
    body = list(node.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    parts = [_serialise(node.args), *(_serialise(stmt) for stmt in body)]
    if node.returns is not None:
        parts.append(_serialise(node.returns))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return f"{CODE_ALGORITHM}:{digest}"


def data_checksum(chunks: Iterable[bytes]) -> str:
    """Checksum of data given as byte chunks (a file read in blocks, or serialised rows)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return f"{DATA_ALGORITHM}:{digest.hexdigest()}"


def same_algorithm(a: str, b: str) -> bool:
    """Whether two checksums were made the same way and can be compared."""
    return a.partition(":")[0] == b.partition(":")[0]


def same_kind(a: str, b: str) -> bool:
    """Whether two checksums both describe code, or both data (any algorithm version).

    A unit whose kind changed under one name (an ``@seed`` function replaced
    by a data seed, or back) did other work than the recorded one.
    """
    return _kind(a) == _kind(b)


def _kind(checksum: str) -> str:
    algorithm = checksum.partition(":")[0]
    return "data" if algorithm == DATA_ALGORITHM or algorithm.startswith("data") else "code"


FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

class _Computed(NamedTuple):
    """A file's checksums in this process, and what they were computed from."""

    # The linecache lines (compared by identity), or the file's (mtime, size, inode).
    source: object
    checksums: dict[str, str] | None
    # The module namespace and spec that asked: more functions of the same
    # module import need no stat (a 1,000-unit module would pay 1,000 of
    # them); importlib.reload installs a new spec, so an edit is seen then.
    namespace: object = None
    spec: object = None


_computed: dict[str, _Computed] = {}


def _file_checksums(filename: str, namespace: dict[str, Any] | None = None
                    ) -> dict[str, str] | None:
    """The checksum of every function in ``filename``, by ``"first line:name"``.

    Computed once per file content: from the on-disk cache when it holds the
    file's current bytes, else by parsing the file (then stored). Lines that
    linecache already holds (a traceback or inspect read the file, or the code
    was registered there without a file: IPython, exec) are what the function
    was compiled from as far as anyone can tell, so they win over the disk.
    """
    if filename in linecache.cache:
        return _from_lines(filename)
    memo = _computed.get(filename)
    spec = namespace.get("__spec__") if namespace is not None else None
    if memo is not None and namespace is not None and memo.namespace is namespace \
            and memo.spec is spec:
        return memo.checksums
    try:
        stat = os.stat(filename)
    except (OSError, ValueError):
        return _from_lines(filename)  # not a plain file: linecache may still find it
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if memo is not None and memo.source == stamp:
        _computed[filename] = memo._replace(namespace=namespace, spec=spec)
        return memo.checksums
    try:
        with open(filename, "rb") as source:
            data = source.read()
    except OSError:
        return _from_lines(filename)
    digest = checksum_cache.source_digest(data)
    checksums = checksum_cache.load(filename, digest, CODE_ALGORITHM)
    if checksums is None:
        # Decoded as the import system and linecache decode it (coding
        # cookie, BOM, universal newlines), so the trees are the same.
        checksums = _checksums_of_text(importlib.util.decode_source(data))
        if checksums is not None:
            checksum_cache.store(filename, digest, CODE_ALGORITHM, checksums)
    _computed[filename] = _Computed(stamp, checksums, namespace, spec)
    return checksums


def _from_lines(filename: str) -> dict[str, str] | None:
    lines = linecache.getlines(filename)
    if not lines:
        return None
    memo = _computed.get(filename)
    if memo is not None and memo.source is lines:  # linecache re-read the file otherwise
        return memo.checksums
    checksums = _checksums_of_text("".join(lines))
    _computed[filename] = _Computed(lines, checksums)
    return checksums


def _checksums_of_text(text: str) -> dict[str, str] | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    index: dict[int, FunctionNode] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # co_firstlineno is the first decorator's line (3.8+).
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            index.setdefault(first, node)
    return {f"{line}:{node.name}": _node_checksum(node) for line, node in index.items()}


def _function_node(fn: Callable[..., Any]) -> FunctionNode | None:
    # A function whose file could not be read or parsed, or that is not at the
    # start of its first line there: let inspect find its source.
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _serialise(value: Any) -> str:
    if isinstance(value, ast.AST):
        fields = []
        for name, field in ast.iter_fields(value):
            if name in _SKIPPED_FIELDS or field is None or field == []:
                continue
            fields.append(f"{name}={_serialise(field)}")
        return f"{type(value).__name__}({','.join(fields)})"
    if isinstance(value, list):
        return "[" + ",".join(_serialise(item) for item in value) + "]"
    # Constants: repr with the type, so 1, 1.0 and True stay distinct.
    return f"{type(value).__name__}:{value!r}"
