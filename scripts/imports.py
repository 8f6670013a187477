"""Print seedguard's internal import graph and fail on an import cycle.

    python scripts/imports.py            # the graph, one module a line, then cycles
    python scripts/imports.py --dot      # Graphviz: python scripts/imports.py --dot | dot -Tsvg

Reads the source (``seedguard/*.py`` beside this script, or ``--package DIR``)
with :mod:`ast`, importing nothing. Every import counts, at module level or
inside a function: a function-level import hides a cycle from the import
system, not from the design (``unit`` importing ``registry`` inside ``seed()``
while ``registry`` imports ``unit`` was one). Imports under
``if TYPE_CHECKING:`` are reported apart and do not make a cycle: they never
run. Exit status 1 when there is a cycle, so the test suite and CI fail on one.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "seedguard"


def modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the package (subpackages included)."""
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, typing_only: bool = False
             ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, typing_only
        elif isinstance(node, ast.If) and _type_checking_block(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), typing_only=True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]),
                                    typing_only=typing_only)
        else:
            yield from _imports(node, typing_only=typing_only)


def _targets(module: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package's modules that ``node`` makes ``module`` depend on.

    ``from seedguard import config`` depends on ``seedguard.config``, not on
    the facade: the package's ``__init__`` already ran for any of its
    submodules to exist. ``from seedguard import apply`` depends on the facade.
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if not _is_package(module, known):
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                 for alias in node.names]
    found = set()
    for name in names:
        # The module itself, or the nearest enclosing module that exists.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _is_package(module: str, known: set[str]) -> bool:
    return module == PACKAGE or any(other.startswith(module + ".") for other in known)


def graph(package_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(runtime imports, imports under TYPE_CHECKING only), each module -> imported modules."""
    found = modules(package_dir)
    runtime: dict[str, set[str]] = {name: set() for name in found}
    typing: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, typing_only in _imports(tree):
            for target in _targets(name, node, set(found)):
                (typing if typing_only else runtime)[name].add(target)
    for name in found:
        typing[name] -= runtime[name]
    return runtime, typing


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path,
                        default=Path(__file__).resolve().parent.parent / PACKAGE)
    parser.add_argument("--dot", action="store_true", help="print Graphviz dot instead")
    args = parser.parse_args(argv)
    runtime, typing = graph(args.package)
    found = cycles(runtime)
    out = sys.stdout
    if args.dot:
        out.write("digraph seedguard {\n  rankdir=LR;\n")
        for name in sorted(runtime):
            for target in sorted(runtime[name]):
                out.write(f'  "{name}" -> "{target}";\n')
            for target in sorted(typing[name]):
                out.write(f'  "{name}" -> "{target}" [style=dashed];\n')
        out.write("}\n")
    else:
        width = max(map(len, runtime))
        for name in sorted(runtime):
            line = ", ".join(sorted(runtime[name])) or "-"
            extra = f"  (typing only: {', '.join(sorted(typing[name]))})" if typing[name] else ""
            out.write(f"{name.ljust(width)}  -> {line}{extra}\n")
    for component in found:
        sys.stderr.write(f"import cycle: {' <-> '.join(component)}\n")
    if not found and not args.dot:
        out.write(f"no import cycle among {len(runtime)} modules\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
