"""The README's demo command runs and shows every unit applied exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_demo(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "quickstart" / "demo.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every unit applied exactly once." in done.stdout
    # One process applied the three units; the four others applied nothing.
    assert done.stdout.count("applied nothing (already seeded)") == 4
