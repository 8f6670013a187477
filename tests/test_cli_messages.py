"""What the CLI tells its user, and that it tells the truth: the real console script in a
subprocess, with a cwd in tmp and the installed seedguard.

No crash on a dry run before the tables exist, hints that fix the problem, read-only
commands that create nothing, global options after the command, contexts that say what
they do, JSON from every command that writes, and exits that tell the truth when a unit
calls sys.exit() or the operator presses Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import TestDatabase, child_env, file_lock_held, write_module
from test_cli_process import on_terminal

SCRIPT = str(Path(sys.executable).with_name("seedguard"))

UNITS = '''
import sqlalchemy as sa
import seedguard

@seedguard.seed("roles")
def roles(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('roles', 'x')"))

@seedguard.seed("admin-user", after=["roles"], contexts=["dev"])
def admin_user(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('admin-user', 'x')"))
'''

COUNTRIES = '''
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
import seedguard

class Base(DeclarativeBase):
    pass

class Country(Base):
    __tablename__ = "countries"
    code: Mapped[str] = mapped_column(sa.String(2), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))

@seedguard.seed("schema")
def schema(session):
    Base.metadata.create_all(session.connection())

seedguard.data_seed("countries", table=Country, key="code", after=["schema"], rows=[
    {"code": "fr", "name": "France"}, {"code": "de", "name": "Germany"}])
'''

EXITS = '''
import os, pathlib, sys, time
import sqlalchemy as sa
import seedguard

@seedguard.seed("first")
def first(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('first', 'x')"))

@seedguard.seed("leaves", after=["first"])
def leaves(session):
    session.execute(sa.text("INSERT INTO effects (unit, value) VALUES ('leaves', 'x')"))
    how = os.environ["SG_HOW"]
    if how == "exit":
        sys.exit(0)
    if how == "generator":
        raise GeneratorExit
    signals = pathlib.Path(os.environ["SG_SIGNALS"])
    (signals / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.02)
'''


def run(args: list[str], cwd: Path, *, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=cwd, env=env or child_env(cwd),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a SQLite file URL and the two units, configured on the command line."""
    folder = tmp_path / "project"
    folder.mkdir()
    write_module(folder, "units", UNITS)
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{folder / 'app.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE effects (unit VARCHAR(255), value VARCHAR(255))"))
    engine.dispose()
    return folder


def base(folder: Path) -> list[str]:
    return ["--url", f"sqlite:///{folder / 'app.db'}", "--seeds", "units"]


# -- dry run, hints, read-only ------------------------------------------------------------


def test_dry_run_before_the_tables_exist(db: TestDatabase, tmp_path: Path) -> None:
    write_module(tmp_path, "countries_seeds", COUNTRIES)
    args = ["--url", db.url, "--seeds", "countries_seeds", "upgrade", "--dry-run"]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "would apply 2 unit(s), in order:",
        "  schema v1",
        "  countries v1 (would insert 2; its table does not exist yet)",
    ]
    doc = json.loads(run([*args, "--json"], tmp_path).stdout)
    assert doc["previews"]["countries"] == {"inserted": 2, "updated": 0, "unchanged": 0,
                                            "deleted": 0, "table_exists": False}
    assert "countries" not in db.tables()


def test_hints_that_fix_the_url(tmp_path: Path) -> None:
    done = run(["--url", "mysql://root@127.0.0.1/x", "--seeds", "none", "history"], tmp_path)
    assert done.returncode == 2
    assert "use mysql+pymysql:// (installed by `pip install 'seedguard[mysql]'`) or pip " \
           "install mysqlclient" in done.stderr
    done = run(["--url", "postgres://app@127.0.0.1/app", "history"], tmp_path)
    assert done.returncode == 2 and "did you mean postgresql://?" in done.stderr


def test_read_only_commands_never_create_a_sqlite_file(project: Path) -> None:
    typo = project / "typo.db"
    for command in (["status"], ["history"], ["check"], ["status", "--json"]):
        done = run(["--url", "sqlite:///typo.db", "--seeds", "units", *command], project)
        assert done.returncode == 2, done.stdout + done.stderr
        assert str(typo) in done.stdout + done.stderr
        assert not typo.exists()
    assert json.loads(run(["--url", "sqlite:///typo.db", "--seeds", "units", "status",
                           "--json"], project).stdout)["error"]["type"] == "ConfigError"
    # The existing database is read (and nothing beside it is created by reading).
    before = sorted(p.name for p in project.iterdir())
    status = run([*base(project), "status"], project)
    assert status.returncode == 0 and "ledger seedguard_ledger (not created yet)" in status.stdout
    assert sorted(p.name for p in project.iterdir()) == before


def test_relative_sqlite_url_in_pyproject_from_a_subdirectory(project: Path) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.seedguard]\nurl = "sqlite:///app.db"\nseeds = "units"\n')
    assert run(["upgrade"], project).returncode == 0
    sub = project / "docs"
    sub.mkdir()
    env = child_env(project)  # the seeds module is importable from the subdirectory too
    status = run(["status"], sub, env=env)
    assert status.returncode == 0, status.stderr
    assert f"database sqlite:///{(project / 'app.db').resolve()}" in status.stdout
    assert re.search(r"applied +roles v1", status.stdout)
    assert list(sub.iterdir()) == []


def test_no_database_message_names_the_options(tmp_path: Path) -> None:
    done = run(["--seeds", "units", "status"], tmp_path)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert line.startswith("error: no database: give --url URL, set SEEDGUARD_URL")
    assert len(line) < 170 and "apply()" not in line


# -- options after the command, new, init ------------------------------------------------------


def test_global_options_after_the_command(project: Path) -> None:
    done = run(["upgrade", *base(project), "--context", "dev", "-q"], project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    doc = json.loads(run(["status", "--json", *base(project), "--context", "dev"],
                         project).stdout)
    assert [(u["name"], u["state"]) for u in doc["units"]] == [("roles", "applied"),
                                                               ("admin-user", "applied")]
    # Before and after the command combine; `--context` accumulates.
    mixed = run(["--url", f"sqlite:///{project / 'app.db'}", "check", "--seeds", "units",
                 "--context", "dev"], project)
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    both = run(["-q", "status", "-v", *base(project)], project)
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_new_writes_into_the_seeds_package_and_passes_ruff(tmp_path: Path) -> None:
    app = tmp_path / "app"
    package = app / "myapp" / "seeds"
    package.mkdir(parents=True)
    (app / "myapp" / "__init__.py").touch()
    (package / "__init__.py").touch()
    (app / "pyproject.toml").write_text(
        '[tool.seedguard]\nurl = "sqlite:///app.db"\nseeds = "myapp.seeds"\n')
    done = run(["new", "admin-user"], app)
    assert done.returncode == 0, done.stderr
    written = package / "admin_user.py"
    assert done.stdout.startswith(f"wrote {written}")
    ruff = Path(sys.executable).with_name("ruff")
    lint = subprocess.run([str(ruff), "check", "--isolated", "--select",
                           "E,F,W,I,B,UP,SIM,RUF", "--line-length", "100", str(written)],
                          capture_output=True, text=True, timeout=60, cwd=app)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = run(["upgrade", "--dry-run"], app)  # discovered: it would run
    assert dry.stdout.splitlines() == ["would apply 1 unit(s), in order:", "  admin-user v1"]
    # Without a seeds package there is nowhere discovery would look: say so.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = run(["new", "roles"], elsewhere)
    assert refused.returncode == 2 and "--dir" in refused.stderr
    assert list(elsewhere.iterdir()) == []
    assert run(["new", "roles", "--dir", "seeds"], elsewhere).returncode == 0
    assert (elsewhere / "seeds" / "roles.py").is_file()


def test_init_never_writes_a_password(tmp_path: Path) -> None:
    done = run(["--url", "postgresql+psycopg://app:s3cret@db.example/app", "--seeds",
                "myapp.seeds", "init"], tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "pyproject.toml").read_text()
    assert "s3cret" not in text and "***" not in text
    assert 'url = "postgresql+psycopg://app@db.example/app"' in text
    assert "SEEDGUARD_URL" in done.stderr and "s3cret" not in done.stdout + done.stderr


# -- contexts ----------------------------------------------------------------------------------


def test_contexts_speak(project: Path) -> None:
    target = run([*base(project), "upgrade", "admin-user"], project)
    assert target.returncode == 2
    assert "runs only in context(s) dev" in target.stderr and "--context dev" in target.stderr
    assert run([*base(project), "history"], project).stdout.startswith("ledger")  # nothing ran

    typo = run([*base(project), "--context", "deb", "upgrade"], project)
    assert typo.returncode == 0
    assert "warning: no unit declares context 'deb'; check the spelling (declared: dev)" \
        in typo.stderr
    assert run([*base(project), "--context", "dev", "upgrade"], project).returncode == 0
    status = run([*base(project), "status"], project)
    assert re.search(r"inactive +admin-user v1 +v1 applied .*runs only in context\(s\) dev, "
                     "none active", status.stdout), status.stdout
    doc = json.loads(run([*base(project), "status", "--json"], project).stdout)
    assert doc["counts"]["inactive"] == 1
    assert run([*base(project), "check"], project).returncode == 0


def test_dependency_left_out_by_contexts(tmp_path: Path) -> None:
    write_module(tmp_path, "prod_units", '''
        import seedguard

        @seedguard.seed("roles", contexts=["prod"])
        def roles(session):
            pass

        @seedguard.seed("admin-user", after=["roles"])
        def admin_user(session):
            pass
        ''')
    done = run(["--url", f"sqlite:///{tmp_path / 'a.db'}", "--seeds", "prod_units", "upgrade",
                "--json"], tmp_path)
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "DefinitionError"
    assert "'admin-user' depends on 'roles'" in error["message"] and "prod" in error["message"]


# -- JSON, prompts, forget --all -------------------------------------------------------------


def test_every_writing_command_takes_json(project: Path) -> None:
    args = base(project)
    assert run([*args, "upgrade"], project).returncode == 0
    check = run([*args, "check", "--json"], project)
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True
    forget = json.loads(run([*args, "forget", "roles", "--json"], project).stdout)
    assert forget == {"ok": True, "command": "forget", "changed": True,
                      "changes": [{"name": "roles", "action": "forgotten", "versions": [1]}]}
    check = run([*args, "check", "--json"], project)
    doc = json.loads(check.stdout)
    assert check.returncode == 3 and doc["ok"] is False and doc["exit_code"] == 3
    assert doc["counts"]["pending"] == 1
    stamp = json.loads(run([*args, "stamp", "roles", "--json"], project).stdout)
    assert stamp["changes"] == [{"name": "roles", "action": "stamped", "versions": [1]}]
    resolve = run([*args, "resolve", "roles", "--retry", "--json"], project)
    assert resolve.returncode == 2
    assert json.loads(resolve.stdout)["error"]["type"] == "ConfigError"


def test_a_bad_unit_name_is_a_definition_error(tmp_path: Path) -> None:
    write_module(tmp_path, "bad_units", "import seedguard\n\n@seedguard.seed('bad name')\n"
                 "def bad(session):\n    pass\n")
    done = run(["--url", f"sqlite:///{tmp_path / 'a.db'}", "--seeds", "bad_units", "upgrade",
                "--json"], tmp_path)
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "DefinitionError"
    assert error["message"].startswith("invalid unit name 'bad name'")


def test_declining_a_prompt_exits_2_and_changes_nothing(project: Path) -> None:
    assert run([*base(project), "upgrade"], project).returncode == 0
    command = [SCRIPT, *base(project), "forget", "roles"]
    code, output = on_terminal(command, project, answer="n")
    assert code == 2, output
    assert "nothing changed" in output and "Aborted" not in output
    assert run([*base(project), "check"], project).returncode == 0


def test_forget_all_empties_the_ledger_under_the_locks(project: Path) -> None:
    args = [*base(project), "--context", "dev"]
    assert run([*args, "upgrade"], project).returncode == 0
    done = run([*args, "forget", "--all"], project)  # no terminal: no prompt
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "forgot admin-user v1, roles v1"
    assert run([*args, "check"], project).returncode == 3
    empty = json.loads(run([*args, "forget", "--all", "--json"], project).stdout)
    assert empty == {"ok": True, "command": "forget", "changed": False, "changes": []}
    assert run([*args, "forget", "--all", "roles"], project).returncode == 2
    assert run([*args, "forget"], project).returncode == 2
    code, output = on_terminal([SCRIPT, *args, "forget", "--all"], project, answer="n")
    assert code == 2 and "Remove every ledger row?" in output


# -- output --------------------------------------------------------------------------------


def test_verbose_logs_never_break_a_progress_line(project: Path) -> None:
    done = subprocess.run([SCRIPT, *base(project), "--context", "dev", "-v", "upgrade"],
                          cwd=project, env=child_env(project), text=True, timeout=60,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout
    for line in done.stdout.splitlines():
        # Every line is whole: a log record, a unit's start, its outcome or the summary.
        assert re.fullmatch(r"\S+ \S+ seedguard\.\S+: .*|applying \S+ v1 \.\.\.|"
                            r"\S+ v1: done \d+ ms|applied 2 unit\(s\) in \d+ ms", line), line


def test_quiet_silences_warnings(project: Path) -> None:
    assert run([*base(project), "upgrade"], project).returncode == 0
    # Changed code of an applied unit (another size, so no stale .pyc): a drift warning.
    write_module(project, "units", UNITS.replace("VALUES ('roles', 'x')",
                                             "VALUES ('roles', 'changed')"))
    loud = run([*base(project), "upgrade"], project)
    assert loud.returncode == 0 and "warning: unit 'roles' v1 was applied with a different" \
        in loud.stderr
    for args in (["-q", "upgrade"], ["upgrade", "-q"], ["-q", "--context", "deb", "upgrade"]):
        quiet = run([*base(project), *args], project)
        assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == "", args


def test_history_table_shows_stamped_rows(project: Path) -> None:
    args = base(project)
    assert run([*args, "upgrade"], project).returncode == 0
    assert run([*args, "--context", "dev", "stamp", "admin-user"], project).returncode == 0
    lines = run([*args, "history"], project).stdout.splitlines()
    assert lines[0].split() == ["applied", "at", "(UTC)", "unit", "status", "took", "by"]
    assert len(lines) == 3
    stamped = next(line for line in lines if "admin-user" in line)
    assert " stamped " in stamped and " - " in stamped
    applied = next(line for line in lines if "roles v1" in line)
    assert " applied " in applied and re.search(r" \d+ ms ", applied)
    # Aligned: every column starts at the same offset on every line.
    for word, header in (("admin-user", "unit"), ("stamped", "status")):
        assert stamped.index(word) == lines[0].index(header)
    assert applied.index("roles") == lines[0].index("unit")


def test_status_says_changed_data_will_re_apply(tmp_path: Path) -> None:
    source = '''
        import seedguard
        seedguard.data_seed("plans", table="plans", key="slug",
                            rows=[{{"slug": "free", "name": "{name}"}}])
        '''
    write_module(tmp_path, "plan_seeds", source.format(name="Free"))
    url = f"sqlite:///{tmp_path / 'a.db'}"
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE plans (slug VARCHAR(20) PRIMARY KEY, name TEXT)"))
    engine.dispose()
    args = ["--url", url, "--seeds", "plan_seeds"]
    assert run([*args, "upgrade"], tmp_path).returncode == 0
    write_module(tmp_path, "plan_seeds", source.format(name="Gratis"))
    status = run([*args, "status"], tmp_path)
    assert re.search(r"pending +plans v1 +data changed since applied \S+; will re-apply",
                     status.stdout), status.stdout


def test_lock_timeout_message_names_the_option(tmp_path: Path) -> None:
    # A second applier holds the file lock (a real process); the message says
    # which option to raise, as typed on the command line.
    write_module(tmp_path, "quick", "import seedguard\n\n@seedguard.seed('roles')\n"
                 "def roles(session):\n    pass\n")
    lock = tmp_path / "held.lock"
    with file_lock_held(lock):
        done = run(["--url", f"sqlite:///{tmp_path / 'a.db'}", "--seeds", "quick",
                    "--lock-path", str(lock), "--lock-timeout", "0.2", "upgrade"], tmp_path)
    assert done.returncode == 4, done.stderr
    assert "--lock-timeout" in done.stderr and "raise lock_timeout" not in done.stderr


# -- a unit that exits, and Ctrl-C ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["exit", "generator"])
def test_a_unit_that_exits_fails_the_run(db: TestDatabase, tmp_path: Path, how: str) -> None:
    db.create_effects_table()
    write_module(tmp_path, "exit_units", EXITS)
    env = {**child_env(tmp_path), "SG_HOW": how}
    args = ["--url", db.url, "--seeds", "exit_units", "upgrade"]
    text = run(args, tmp_path, env=env)
    assert text.returncode == 1, text.stdout + text.stderr
    assert "applied 1 unit(s)" in text.stdout and "before the failure" in text.stdout
    assert text.stderr.startswith("error: ") and "Traceback" not in text.stderr
    assert db.effects() == ["first"] and db.ledger() == [("first", 1)]
    doc = run([*args, "--json"], tmp_path, env=env)
    assert doc.returncode == 1
    parsed = json.loads(doc.stdout)  # exactly one document, nothing else on stdout
    assert parsed["ok"] is False and parsed["error"]["exit_code"] == 1
    assert db.effects() == ["first"]


def test_ctrl_c_exits_130_with_the_summary(db: TestDatabase, tmp_path: Path) -> None:
    db.create_effects_table()
    write_module(tmp_path, "exit_units", EXITS)
    for as_json in (False, True):
        signals = tmp_path / f"signals-{as_json}"
        signals.mkdir()
        env = {**child_env(tmp_path), "SG_HOW": "wait", "SG_SIGNALS": str(signals)}
        args = [SCRIPT, "--url", db.url, "--seeds", "exit_units", "upgrade"]
        proc = subprocess.Popen([*args, *(["--json"] if as_json else [])], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (signals / "started").exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the unit never started"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        assert proc.returncode == 130, out + err
        if as_json:
            doc = json.loads(out)
            assert doc["ok"] is False and doc["error"]["type"] == "KeyboardInterrupt"
            assert doc["error"]["exit_code"] == 130 and doc["applied"] == []
        else:
            assert "applied 1 unit(s)" in out and "before the failure" in out
            assert err.startswith("error: interrupted (Ctrl-C)") and "Aborted" not in err
        # The interrupted unit was rolled back; the one before it stays applied.
        assert db.effects() == ["first"] and db.ledger() == [("first", 1)]
