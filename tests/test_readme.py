"""The examples of the README and of every page under docs/ run exactly as printed.

A fenced block is runnable when the line before it is ``<!-- runnable -->`` or
``<!-- runnable: FILE -->``. The runnable blocks of one document run in
document order in one empty folder (a new user's project):

- a block with a FILE is written to that file (any language: a CSV, a TOML
  file); a ``python`` block without one is run with ``python -`` and must exit 0;
- in a ``console`` block each ``$ `` line runs in a shell (the installed
  ``seedguard`` and ``python`` first on PATH), must exit 0, and prints the lines
  that follow it, up to the next ``$ ``: compared after setting aside what
  differs between runs (timestamps, durations, ``host:pid``, the folder's path
  and runs of spaces).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The pages whose examples must run as printed: every page of the site.
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- runnable(?::\s*(?P<file>\S+))?\s*-->")


@dataclass
class Block:
    line: int
    language: str
    file: str | None
    text: str


def runnable_blocks(markdown: str, name: str = "README.md") -> list[Block]:
    lines = markdown.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if marker is None:
            continue
        fence = lines[index + 1]
        assert fence.startswith("```"), f"{name}:{index + 1}: a runnable marker needs a fence"
        end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
        blocks.append(Block(index + 2, fence[3:].strip(), marker.group("file"),
                            "\n".join(lines[index + 2:end]) + "\n"))
    return blocks


def commands(block: Block, name: str = "README.md") -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each ``$ `` line of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{name}:{block.line}: output before the first `$ ` line"
            steps[-1][1].append(line)
    return steps


def normalised(lines: list[str], project: Path) -> list[str]:
    text = "\n".join(lines)
    for folder in {str(project.resolve()), str(project)}:
        text = text.replace(folder, "/path/to/project")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00", "<time>", text)
    text = re.sub(r"\b\d+ ms\b", "<n> ms", text)
    text = re.sub(r"\b[\w.-]+:\d+\b", "<host:pid>", text)
    return [" ".join(line.split()) for line in text.splitlines()]


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SEEDGUARD_") and key != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_docs_are_found() -> None:
    # A moved docs/ folder must not silently leave its examples untested.
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert {"README.md", "docs/getting-started.md", "docs/index.md"} <= names, names
    assert (ROOT / "mkdocs.yml").is_file()


def test_readme_examples_run_as_printed(tmp_path: Path) -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    kinds = {(block.language, block.file is not None) for block in blocks}
    assert ("python", True) in kinds and ("console", False) in kinds, kinds
    run_blocks(blocks, "README.md", tmp_path)


def pages_with_examples() -> list[str]:
    return [path.relative_to(ROOT).as_posix() for path in DOCUMENTS[1:]
            if MARKER.search(path.read_text(encoding="utf-8"))]


def test_getting_started_runs() -> None:
    # The page every new user runs first: its quick start must stay under test.
    assert "docs/getting-started.md" in pages_with_examples()


@pytest.mark.parametrize("page", pages_with_examples())
def test_docs_examples_run_as_printed(page: str, tmp_path: Path) -> None:
    blocks = runnable_blocks((ROOT / page).read_text(encoding="utf-8"), page)
    assert any(block.language == "console" or block.file is None for block in blocks), (
        f"{page}: runnable files but nothing that runs them")
    run_blocks(blocks, page, tmp_path)


def run_blocks(blocks: list[Block], name: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = environment()
    for block in blocks:
        where = f"{name}:{block.line}"
        if block.file is not None:
            target = project / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.language == "python":
            done = subprocess.run([sys.executable, "-"], input=block.text, cwd=project,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{where}: {done.stdout}{done.stderr}"
        elif block.language == "console":
            for command, expected in commands(block, name):
                done = subprocess.run(["bash", "-c", command], cwd=project, env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, timeout=120)
                assert done.returncode == 0, f"{where}: $ {command}\n{done.stdout}"
                got = normalised(done.stdout.splitlines(), project)
                assert got == normalised(expected, project), f"{where}: $ {command}"
        else:
            raise AssertionError(f"{where}: runnable blocks are python or console, not "
                                 f"{block.language!r}")
