"""What the command prints when the application logs: progress keeps its own lines, and
``upgrade --schema`` with nothing to do prints no alembic INFO lines below ``-v``.

Real ``seedguard`` processes; stderr merged into stdout, as a terminal or ``docker logs``
shows them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _alembic_project import create_schema_log, make_project
from _support import child_env, write_module

SCRIPT = str(Path(sys.executable).with_name("seedguard"))

# As `alembic init` writes it: the alembic logger at INFO, to stderr.
LOGGING_INI = """
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

# An app module that configures logging when imported, as the template's
# initial_data.py does, and a unit that logs while it runs.
CHATTY = '''
import logging
import sqlalchemy as sa
import seedguard

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("app")

@seedguard.seed("chatty")
def chatty(session):
    logger.info("creating the first superuser")
    session.execute(sa.text("SELECT 1"))
'''


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=child_env(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_progress_keeps_its_own_lines_when_the_app_logs(tmp_path: Path) -> None:
    write_module(tmp_path, "chatty_seeds", CHATTY)

    done = _run(["--url", f"sqlite:///{tmp_path / 'app.db'}", "--seeds", "chatty_seeds",
                 "upgrade"], tmp_path)

    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert "applying chatty v1 ..." in lines, lines
    assert "INFO:app:creating the first superuser" in lines, lines
    assert any(line.startswith("chatty v1: done ") for line in lines), lines
    # Nor seedguard's own alembic (creating the ledger) in the app's INFO log.
    assert not [line for line in lines if "alembic" in line], lines


def test_upgrade_schema_with_nothing_to_do_prints_no_alembic_info(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    ini = make_project(tmp_path, url)
    ini.write_text(ini.read_text().split("[loggers]")[0] + LOGGING_INI)
    create_schema_log(url)
    write_module(tmp_path, "quiet_seeds", CHATTY.replace("logging.basicConfig(level=logging.INFO)",
                                                         ""))
    command = ["--url", url, "--seeds", "quiet_seeds", "--alembic-config", str(ini),
               "upgrade", "--schema"]

    first = _run(command, tmp_path)
    assert first.returncode == 0, first.stdout
    assert "upgraded the schema: aaaa00000001, bbbb00000002, cccc00000003" in first.stdout
    second = _run(command, tmp_path)
    verbose = _run([*command, "-v"], tmp_path)

    assert "INFO  [alembic" not in first.stdout, first.stdout
    assert second.returncode == 0
    assert second.stdout.splitlines() == ["nothing to do: 1 unit(s) already applied"]
    assert "INFO  [alembic.runtime.migration] Context impl SQLiteImpl." in verbose.stdout
