"""seedguard demo: four processes start at once and seed one SQLite database.

Without seedguard each would insert the roles and the admin user (and all but
one would die on the unique constraints). With it, exactly one process applies
each unit and the others find nothing left to do.

Run from the repository root after `pip install .`:

    python examples/quickstart/demo.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = """
import sys
import seedguard

url = sys.argv[1]
result = seedguard.apply(url, seeds="seeds")
applied = ", ".join(f"{u.name} v{u.version}" for u in result.applied) or "nothing (already seeded)"
print(f"process {sys.argv[2]}: applied {applied}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        print(f"database: {url}\n-- four processes start together --")
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, url, str(n)], cwd=HERE)
            for n in range(1, 5)
        ]
        codes = [proc.wait(timeout=120) for proc in procs]
        print("-- and a restart later --")
        subprocess.run([sys.executable, "-c", WORKER, url, "5"], cwd=HERE, check=True)

        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:
            roles = conn.execute(text("SELECT name FROM roles ORDER BY id")).scalars().all()
            users = conn.execute(text("SELECT email FROM users")).scalars().all()
            ledger = conn.execute(
                text("SELECT name, version, applied_by FROM seedguard_ledger ORDER BY name")
            ).all()
        engine.dispose()
        print(f"\nroles: {roles}\nusers: {users}")
        print("ledger:")
        for name, version, applied_by in ledger:
            print(f"  {name} v{version} applied by {applied_by}")
        if any(codes) or roles != ["admin", "user"] or len(users) != 1:
            sys.exit("demo failed: expected every unit exactly once")
        print("\nevery unit applied exactly once.")


if __name__ == "__main__":
    main()
