"""The shape of the imports: no cycle inside seedguard, nothing heavy on the no-op path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _support import write_module

import seedguard

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "imports.py"
INSTALLED = Path(seedguard.__file__).resolve().parent

# What a start-up with nothing to do must not load: the ORM (imported only
# once there is work), alembic (only to create or upgrade the ledger, or for
# units that need a revision), Flask (only when the app already imported it).
HEAVY = ("alembic", "sqlalchemy.orm", "flask", "flask_sqlalchemy",
         # seedguard's own parts for other work: data seeds (csv, decimal, refs),
         # apply_async, the PostgreSQL upsert writer.
         "seedguard.data", "seedguard.refs", "seedguard.aio", "seedguard.upsert.postgresql",
         # OpenTelemetry only when the app imported it (seedguard.otel), wait() only
         # when called.
         "opentelemetry", "seedguard.otel", "seedguard.readiness",
         # The runner and what only it needs, once the first look finds work
         # (seedguard.startup); the ledger administration, only when called.
         "seedguard.runner", "seedguard.context", "seedguard.guard", "seedguard.locks",
         "seedguard.sessionclass", "seedguard.admin", "seedguard.reports", "filelock")


def _imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60)


def test_no_import_cycle_inside_seedguard() -> None:
    result = _imports("--package", str(INSTALLED))
    assert result.returncode == 0, result.stderr
    assert "no import cycle" in result.stdout
    assert "seedguard.registry" in result.stdout and "seedguard.unit" in result.stdout


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / "seedguard"
    package.mkdir()
    (package / "__init__.py").write_text("from seedguard.a import f\n")
    (package / "a.py").write_text("from seedguard.b import g\n\ndef f():\n    pass\n")
    # The import the import system never sees at start-up, inside a function.
    (package / "b.py").write_text("def g():\n    from seedguard import a\n    return a\n")
    (package / "c.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from seedguard.d import D
        """))
    (package / "d.py").write_text("from seedguard.c import TYPE_CHECKING\nclass D: ...\n")
    result = _imports("--package", str(package))
    assert result.returncode == 1
    assert "import cycle: seedguard.a <-> seedguard.b" in result.stderr
    assert "seedguard.c" not in result.stderr  # typing-only imports never run
    assert "(typing only: seedguard.d)" in result.stdout
    dot = _imports("--package", str(package), "--dot")
    assert '"seedguard.b" -> "seedguard.a";' in dot.stdout


@pytest.mark.parametrize("how", ["cli", "apply"])
def test_a_no_op_start_up_imports_nothing_heavy(tmp_path: Path, how: str) -> None:
    write_module(tmp_path, "light_seeds", """
        import seedguard

        @seedguard.seed("roles")
        def roles(session):
            pass
        """)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("SEEDGUARD_URL", None)
    first = subprocess.run([sys.executable, "-c", "import seedguard, sys; "
                            f"seedguard.apply({url!r}, seeds='light_seeds')"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    if how == "cli":
        call = ("from seedguard.cli import main\n"
                "try:\n"
                f"    main(['--url', {url!r}, '--seeds', 'light_seeds', 'upgrade'])\n"
                "except SystemExit as exit:\n"
                "    assert not exit.code, exit.code\n")
    else:
        call = f"import seedguard\nseedguard.apply({url!r}, seeds='light_seeds')\n"
    code = call + "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "seedguard.startup" in loaded  # the check looks at a real run
    heavy = [m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))]
    assert heavy == []
