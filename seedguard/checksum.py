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
import inspect
import linecache
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

CODE_ALGORITHM = "ast1"
DATA_ALGORITHM = "sha256"
# Used when a function's source cannot be read (defined in a REPL or by exec):
# bytecode is not stable across Python versions, so it is tagged apart.
BYTECODE_ALGORITHM = "code1"

# Position attributes and the pieces that must not count.
_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "kind"})


def code_checksum(fn: Callable[..., Any]) -> str:
    """Checksum of a function's code: its arguments and body, without docstring or decorators."""
    node = _function_node(fn)
    if node is None:
        code = getattr(fn, "__code__", None)
        payload = repr((code.co_code, code.co_consts, code.co_names)) if code else repr(fn)
        return f"{BYTECODE_ALGORITHM}:{hashlib.sha256(payload.encode()).hexdigest()}"
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

# filename -> (the linecache lines it was parsed from, function nodes by line).
_parsed: dict[str, tuple[list[str], dict[int, FunctionNode]]] = {}


def _function_node(fn: Callable[..., Any]) -> FunctionNode | None:
    # Parse each source file once and find the function by its first line: a
    # module of 1,000 units would otherwise be read and tokenized 1,000 times
    # (inspect.getsource) at every fresh start-up (bench/noop.py).
    code = getattr(fn, "__code__", None)
    if code is not None:
        found = _node_in_file(code.co_filename, code.co_firstlineno, fn.__name__)
        if found is not None:
            return found
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


def _node_in_file(filename: str, line: int, name: str) -> FunctionNode | None:
    lines = linecache.getlines(filename)
    if not lines:
        return None
    cached = _parsed.get(filename)
    if cached is None or cached[0] is not lines:  # linecache re-read the file
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return None
        index: dict[int, FunctionNode] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # co_firstlineno is the first decorator's line (3.8+).
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                index.setdefault(first, node)
        cached = _parsed[filename] = (lines, index)
    found = cached[1].get(line)
    return found if found is not None and found.name == name else None


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
