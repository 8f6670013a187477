"""Hostile and broken input: bad names, planted lock files, passwords, foreign ledgers.

Each case gets a clear error and leaves the database exactly as it was.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env, seeds_source, unit, write_module

import seedguard
from seedguard import ConfigError, LockTimeout, SeedguardError
from seedguard.locks import Deadline, FileLock, database_lock, default_lock_path, lock_key

PASSWORD = "Pw-s3cr3t-Hostile"
NOBODY = 65534


@pytest.fixture
def fx(db: TestDatabase) -> TestDatabase:
    db.create_effects_table()
    return db


def snapshot(db: TestDatabase) -> tuple[set[str], list[str]]:
    return db.tables(), sorted(db.effects())


# -- identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["SEEDGUARD_LEDGER_TABLE", "SEEDGUARD_LEDGER_SCHEMA"])
@pytest.mark.parametrize("name", [
    "x; DROP TABLE effects", 'ledger"', "a b", "1abc", "l" * 64, "ledger--", "sch.tbl", "ä",
])
def test_ledger_table_and_schema_names_are_validated(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     variable: str, name: str) -> None:
    database = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    database.create_effects_table()
    monkeypatch.setenv(variable, name)
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        seedguard.apply(database.url, seeds=[unit("a")])
    assert snapshot(database) == ({"effects"}, [])


def test_pyproject_ledger_table_is_validated(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.seedguard]\nledger_table = "t; DELETE FROM effects"\n')
    monkeypatch.chdir(tmp_path)
    database = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    database.create_effects_table()
    database.execute("INSERT INTO effects (unit) VALUES ('keep')")
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        seedguard.apply(database.url, seeds=[unit("a")])
    assert snapshot(database) == ({"effects"}, ["keep"])


# -- the lock path --------------------------------------------------------------------


def test_symlink_at_lock_path_is_refused_not_followed(fx: TestDatabase) -> None:
    precious = fx.tmp_path / "precious.txt"
    precious.write_text("do not touch")
    link = fx.tmp_path / "seed.lock"
    link.symlink_to(precious)
    with pytest.raises(ConfigError, match="not a regular file"):
        seedguard.apply(fx.url, seeds=[unit("a")], lock_path=link)
    assert precious.read_text() == "do not touch"
    assert link.is_symlink()
    assert snapshot(fx) == ({"effects"}, [])


def test_dangling_symlink_at_lock_path_is_refused(fx: TestDatabase) -> None:
    target = fx.tmp_path / "would-be-created"
    link = fx.tmp_path / "seed.lock"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="not a regular file"):
        seedguard.apply(fx.url, seeds=[unit("a")], lock_path=link)
    assert not target.exists()
    assert snapshot(fx) == ({"effects"}, [])


def test_directory_at_lock_path_is_refused(fx: TestDatabase) -> None:
    (fx.tmp_path / "seed.lock").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        seedguard.apply(fx.url, seeds=[unit("a")], lock_path=fx.tmp_path / "seed.lock")


def _require_root() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a file owned by another user")


def test_lock_file_of_another_user_is_refused(fx: TestDatabase) -> None:
    _require_root()
    planted = fx.tmp_path / "seed.lock"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to another user"):
        seedguard.apply(fx.url, seeds=[unit("a")], lock_path=planted)
    assert snapshot(fx) == ({"effects"}, [])


def test_default_lock_dir_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = sa.engine.make_url(f"postgresql+psycopg://app:{PASSWORD}@db.example/app")
    path = default_lock_path(url)
    directory = path.parent
    info = directory.stat()
    assert directory.parent == tmp_path and info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert PASSWORD not in str(path)
    # The password is not part of the key: changing it does not split the lock.
    assert default_lock_path(url.set(password="other")) == path

    directory.chmod(0o755)  # readable by others (a permissive umask): closed again
    default_lock_path(url)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # Writable by others is refused instead (test_security.py): what was planted
    # meanwhile is for its owner to inspect.


def test_default_lock_dir_of_another_user_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _require_root()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"seedguard-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="not a directory owned by you"):
        default_lock_path(sa.engine.make_url("postgresql+psycopg://app@db.example/app"))


def test_symlink_as_default_lock_dir_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"seedguard-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a directory owned by you"):
        default_lock_path(sa.engine.make_url("postgresql+psycopg://app@db.example/app"))


# -- passwords ------------------------------------------------------------------------


def with_password(db: TestDatabase) -> str:
    """The test database's URL with a password (trust auth on the test server ignores it)."""
    url = sa.engine.make_url(db.url).set(password=PASSWORD)
    return url.render_as_string(hide_password=False)


def assert_clean(*texts: object) -> None:
    for text in texts:
        assert PASSWORD not in str(text), f"password leaked: {text!s:.300}"


def test_password_not_in_logs_results_or_holder_records(pg: TestDatabase,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    pg.create_effects_table()
    url = with_password(pg)
    caplog.set_level(logging.DEBUG)
    result = seedguard.apply(url, seeds=[unit("a")], lock_timeout=5)
    assert [u.name for u in result.applied] == ["a"]
    assert_clean(caplog.text, repr(result), result)
    lock_dir = default_lock_path(sa.engine.make_url(url)).parent
    for path in lock_dir.iterdir():
        if path.is_file():
            assert_clean(path.read_text(errors="replace"))


def test_password_not_in_lock_timeouts(pg: TestDatabase) -> None:
    pg.create_effects_table()
    url = with_password(pg)
    engine = sa.create_engine(url)
    try:
        # The file lock held elsewhere (by this test):
        lock_path = pg.tmp_path / "held.lock"
        held = FileLock(lock_path)
        held.acquire(Deadline(1))
        try:
            with pytest.raises(LockTimeout) as file_timeout:
                seedguard.apply(url, seeds=[unit("a")], lock_path=lock_path, lock_timeout=0.2)
        finally:
            held.release()
        # The database lock held by another session (as from another host):
        db_held = database_lock(engine, lock_key(engine, "seedguard_ledger", None))
        db_held.acquire(Deadline(5))
        try:
            with pytest.raises(LockTimeout) as db_timeout:
                seedguard.apply(url, seeds=[unit("a")], lock_path=pg.tmp_path / "own.lock",
                                lock_timeout=0.5)
        finally:
            db_held.release()
    finally:
        engine.dispose()
    for info in (file_timeout, db_timeout):
        assert_clean(info.value, info.value.holder, info.value.lock, repr(info.value))
        assert "pid" in str(info.value)  # the holder is still named
    assert pg.effects() == []


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/app",  # nothing listens on port 1
    f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:notaport/app",  # cannot be parsed
    f"nosuchdialect://app:{PASSWORD}@127.0.0.1/app",
    f"mysql+pymysql://nosuchuser:{PASSWORD}@127.0.0.1:3306/test",  # refused by the server
])
def test_password_not_in_connection_errors(url: str) -> None:
    if url.startswith("mysql"):
        from conftest import need_server

        need_server("mariadb")
    with pytest.raises(SeedguardError) as info:
        seedguard.apply(url, seeds=[unit("a")], lock_timeout=1)
    assert_clean(info.value, repr(info.value))
    cause = info.value.__cause__
    assert cause is not None  # the driver's own error stays available, as the cause


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seedguard", *args], cwd=cwd,
                          env=child_env(cwd), capture_output=True, text=True, timeout=60)


def test_password_not_in_cli_output(pg: TestDatabase) -> None:
    pg.create_effects_table()
    url = with_password(pg)
    module = f"hostile_seeds_{pg.tmp_path.name.replace('-', '_')}"
    write_module(pg.tmp_path, module, seeds_source(["a", "b"]))
    common = ["--url", url, "--seeds", module, "-v"]
    runs = [
        run_cli(*common, "upgrade", cwd=pg.tmp_path),
        run_cli(*common, "upgrade", "--json", cwd=pg.tmp_path),
        run_cli(*common, "status", cwd=pg.tmp_path),
        run_cli(*common, "status", "--json", cwd=pg.tmp_path),
        run_cli(*common, "history", cwd=pg.tmp_path),
        run_cli(*common, "history", "--json", cwd=pg.tmp_path),
        run_cli(*common, "check", cwd=pg.tmp_path),
    ]
    bad = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/app"
    failing = [
        run_cli("--url", bad, "--seeds", module, "-v", "upgrade", cwd=pg.tmp_path),
        run_cli("--url", bad, "--seeds", module, "upgrade", "--json", cwd=pg.tmp_path),
        run_cli("--url", bad, "--seeds", module, "status", "--json", cwd=pg.tmp_path),
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    for proc in failing:
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
    for proc in runs + failing:
        assert_clean(proc.stdout, proc.stderr)
    assert sorted(pg.effects()) == ["a", "b"]


# -- foreign and future ledgers, broken seeds ---------------------------------------------


def test_foreign_table_at_the_ledger_name_is_refused_and_left_alone(fx: TestDatabase) -> None:
    fx.execute("CREATE TABLE seedguard_ledger (id INTEGER, note VARCHAR(20))")
    fx.execute("INSERT INTO seedguard_ledger (id, note) VALUES (1, 'theirs')")
    before = snapshot(fx)
    with pytest.raises(ConfigError, match="not a seedguard ledger") as info:
        seedguard.apply(fx.url, seeds=[unit("a")])
    assert "ledger_table" in str(info.value)  # names the way out
    assert snapshot(fx) == before  # no version table, no effects
    rows = fx.execute("SELECT id, note FROM seedguard_ledger")
    assert [tuple(r) for r in rows] == [(1, "theirs")]


def test_ledger_from_a_newer_seedguard_is_refused(fx: TestDatabase) -> None:
    seedguard.apply(fx.url, seeds=[unit("a")])
    fx.execute("UPDATE seedguard_ledger_version SET version_num = 'sg9999'")
    fx.execute("INSERT INTO seedguard_ledger (name, version, status, applied_at) "
               "VALUES ('future', 1, 'applied-v9', CURRENT_TIMESTAMP)")
    before = snapshot(fx), fx.ledger()
    with pytest.raises(SeedguardError, match="newer seedguard"):
        seedguard.apply(fx.url, seeds=[unit("a"), unit("b")])
    assert (snapshot(fx), fx.ledger()) == before
    rev = fx.execute("SELECT version_num FROM seedguard_ledger_version")
    assert [r[0] for r in rev] == ["sg9999"]


def test_seeds_module_that_raises_on_import(fx: TestDatabase,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"broken_seeds_{fx.tmp_path.name.replace('-', '_')}"
    write_module(fx.tmp_path, module, """
        import seedguard
        @seedguard.seed("never")
        def never(session):
            raise AssertionError("must not run")
        raise RuntimeError("config file missing")
        """)
    monkeypatch.syspath_prepend(str(fx.tmp_path))
    with pytest.raises(ConfigError) as info:
        seedguard.apply(fx.url, seeds=module)
    message = str(info.value)
    assert module in message and "RuntimeError" in message and "config file missing" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert snapshot(fx) == ({"effects"}, [])  # not even the ledger was created
