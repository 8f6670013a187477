"""Hostile hosts: files another account planted, symlinks, and passwords in any spelling.

A shared machine (a CI runner, a jump box, a container with a world-writable
workspace) has other accounts. What they can write must not decide what
seedguard runs, what it writes, or what it prints. The tests run as root:
``os.chown`` to another uid makes a file another account's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, child_env, seeds_source, unit, write_module

import seedguard
from seedguard import ConfigError
from seedguard.config import resolve
from seedguard.locks import Deadline, FileLock, default_lock_path

OTHER = 12345  # another account's uid (and gid)


def _require_root() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a file owned by another account")


def plant(path: Path, text: str = "", *, uid: int = OTHER) -> Path:
    """``path`` written with ``text`` and handed to another account."""
    path.write_text(textwrap.dedent(text))
    os.chown(path, uid, uid)
    return path


def shared_dir(parent: Path, mode: int) -> Path:
    """A directory every account may write to (``mode`` 0o777, or 0o1777 like /tmp)."""
    directory = parent / f"shared-{mode:o}"
    directory.mkdir()
    directory.chmod(mode)
    return directory


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    environment = child_env(cwd)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "seedguard", *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=120)


# -- configuration files: pyproject.toml ----------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=oct)
def test_pyproject_of_another_account_is_ignored(tmp_path: Path, mode: int,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The repro: a planted [tool.seedguard] with contexts = ["dev"] made a
    # production run apply a dev-only admin unit.
    _require_root()
    shared = shared_dir(tmp_path, mode)
    planted = plant(shared / "pyproject.toml", """
        [tool.seedguard]
        contexts = ["dev"]
        """)
    work = shared / "victim"
    work.mkdir()
    monkeypatch.chdir(work)
    database = TestDatabase("sqlite", f"sqlite:///{work / 'app.db'}", work)
    database.create_effects_table()
    caplog.set_level(logging.WARNING, logger="seedguard")

    result = seedguard.apply(database.url, seeds=[unit("roles"),
                                                  unit("dev-admin", contexts=frozenset({"dev"}))])

    assert [u.name for u in result.applied] == ["roles"]
    assert database.effects() == ["roles"]
    warnings = [r.getMessage() for r in caplog.records if str(planted) in r.getMessage()]
    assert warnings, caplog.text
    assert "uid 12345" in warnings[0] and "chown" in warnings[0]  # names it, says how to trust it


def test_pyproject_of_another_account_is_not_read_past(tmp_path: Path) -> None:
    # The search does not go on above an untrusted file: what it stops at is
    # the project's own configuration, however it is owned.
    _require_root()
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\nurl = "sqlite:///outer.db"\n')
    inner = tmp_path / "inner"
    inner.mkdir()
    plant(inner / "pyproject.toml", '[tool.seedguard]\nurl = "sqlite:///planted.db"\n')
    assert resolve(cwd=inner).url is None


def test_own_and_root_pyproject_is_trusted(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\ncontexts = ["dev"]\n')
    os.chown(tmp_path / "pyproject.toml", os.getuid(), os.getgid())
    assert resolve(cwd=tmp_path).contexts == ("dev",)


@pytest.mark.parametrize("marker", [".git/", ".git", ".hg/"])
def test_pyproject_search_stops_at_the_repository_root(tmp_path: Path, marker: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\nurl = "sqlite:///outer.db"\n')
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    if marker.endswith("/"):
        (repo / marker.rstrip("/")).mkdir()
    else:  # a worktree's or submodule's .git is a file
        (repo / marker).write_text("gitdir: /elsewhere\n")
    assert resolve(cwd=repo / "src").url is None
    # The repository's own pyproject.toml, at its root, is found from below.
    (repo / "pyproject.toml").write_text('[tool.seedguard]\nurl = "sqlite:///inner.db"\n')
    assert resolve(cwd=repo / "src").url == f"sqlite:///{repo / 'inner.db'}"


@contextlib.contextmanager
def mounted_tmpfs(path: Path) -> Iterator[None]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "seedguard-test", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_pyproject_search_stops_at_a_mount_point(tmp_path: Path) -> None:
    _require_root()
    (tmp_path / "pyproject.toml").write_text('[tool.seedguard]\nurl = "sqlite:///outer.db"\n')
    with mounted_tmpfs(tmp_path / "mnt"):
        project = tmp_path / "mnt" / "project"
        project.mkdir()
        assert os.stat(project).st_dev != os.stat(tmp_path).st_dev
        assert resolve(cwd=project).url is None
        # Within the mounted file system the search works as anywhere.
        (tmp_path / "mnt" / "pyproject.toml").write_text('[tool.seedguard]\nseeds = "s"\n')
        assert resolve(cwd=project).seeds == "s"


# -- configuration files: the alembic config --------------------------------------------


def evil_alembic(folder: Path, marker: Path, *, uid: int = OTHER) -> Path:
    """An alembic folder whose env.py, when run, leaves ``marker``; owned by ``uid``."""
    (folder / "versions").mkdir(parents=True)
    plant(folder / "alembic.ini", f"[alembic]\nscript_location = {folder}\n", uid=uid)
    plant(folder / "env.py", f"open({str(marker)!r}, 'w').write('ran')\n", uid=uid)
    plant(folder / "script.py.mako", "", uid=uid)
    return folder / "alembic.ini"


@pytest.fixture
def victim(tmp_path: Path) -> tuple[Path, list[str]]:
    """A shared 0o1777 directory, the victim's project in it, and its explicit CLI options."""
    _require_root()
    shared = shared_dir(tmp_path, 0o1777)
    work = shared / "victim"
    work.mkdir()
    module = f"victim_seeds_{uuid.uuid4().hex[:8]}"
    write_module(work, module, seeds_source(["a"]))
    database = TestDatabase("sqlite", f"sqlite:///{work / 'app.db'}", work)
    database.create_effects_table()
    return work, ["--url", database.url, "--seeds", module]


def test_planted_pyproject_cannot_choose_the_alembic_env(victim: tuple[Path, list[str]]) -> None:
    # The repro: alembic_config = "evil" in a planted pyproject.toml made
    # `seedguard upgrade --schema` run the other account's env.py as the victim.
    work, options = victim
    marker = work.parent / "env-py-ran"
    evil_alembic(work.parent / "evil", marker)
    planted = plant(work.parent / "pyproject.toml",
                    '[tool.seedguard]\nalembic_config = "evil"\n')
    proc = run_cli(*options, "upgrade", "--schema", cwd=work)
    assert not marker.exists()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "needs your alembic scripts" in proc.stderr
    assert f"ignoring {planted}" in proc.stderr and "chown" in proc.stderr
    assert proc.stderr.count(f"ignoring {planted}") == 1  # once, however often it is looked at


def test_planted_alembic_ini_in_the_current_directory_is_ignored(
        victim: tuple[Path, list[str]]) -> None:
    work, options = victim
    marker = work / "env-py-ran"
    ini = evil_alembic(work / "migrations", marker)
    os.rename(ini, work / "alembic.ini")
    os.chown(work, OTHER, OTHER)  # the account that could plant it owns the directory
    proc = run_cli(*options, "upgrade", "--schema", cwd=work)
    assert not marker.exists()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"ignoring {work / 'alembic.ini'}" in proc.stderr
    assert "SEEDGUARD_ALEMBIC_CONFIG" in proc.stderr  # how to trust it


def test_alembic_config_named_by_own_pyproject_must_be_trusted_too(
        victim: tuple[Path, list[str]]) -> None:
    work, options = victim
    marker = work / "env-py-ran"
    ini = evil_alembic(work.parent / "theirs", marker)
    (work / "pyproject.toml").write_text(f'[tool.seedguard]\nalembic_config = "{ini}"\n')
    proc = run_cli(*options, "upgrade", "--schema", cwd=work)
    assert not marker.exists()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"ignoring {ini}" in proc.stderr


@pytest.mark.parametrize("how", ["environment", "option"])
def test_explicitly_named_alembic_config_is_trusted_as_given(
        victim: tuple[Path, list[str]], how: str) -> None:
    work, options = victim
    marker = work / "env-py-ran"
    ini = evil_alembic(work.parent / "theirs", marker)
    if how == "environment":
        proc = run_cli(*options, "upgrade", "--schema", cwd=work,
                       env={"SEEDGUARD_ALEMBIC_CONFIG": str(ini)})
    else:
        proc = run_cli(*options, "--alembic-config", str(ini), "upgrade", "--schema", cwd=work)
    assert marker.exists(), (proc.stdout, proc.stderr)  # chosen on purpose: it ran
    assert "ignoring" not in proc.stderr


# -- lock and holder files ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=oct)
def test_planted_symlinks_at_the_holder_record_are_not_followed(tmp_path: Path,
                                                                mode: int) -> None:
    # The repro: another account's symlink at <lock>.holder.<pid> made apply()
    # overwrite a file the victim can write.
    _require_root()
    shared = shared_dir(tmp_path, mode)
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    lock = shared / "app.lock"
    for name in (f"app.lock.holder.{os.getpid()}", "app.lock.holder"):
        (shared / name).symlink_to(precious)
        os.lchown(shared / name, OTHER, OTHER)
    database = TestDatabase("sqlite", f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    database.create_effects_table()

    held = FileLock(lock)
    held.acquire(Deadline(5))
    try:
        holder = held.holder_path
        info = holder.lstat()
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert str(os.getpid()) in holder.read_text()
    finally:
        held.release()
    assert precious.read_text() == "do not touch"

    for name in (f"app.lock.holder.{os.getpid()}", "app.lock.holder"):
        with contextlib.suppress(FileNotFoundError):
            (shared / name).unlink()
        (shared / name).symlink_to(precious)
        os.lchown(shared / name, OTHER, OTHER)
    result = seedguard.apply(database.url, seeds=[unit("a")], lock_path=lock)
    assert [u.name for u in result.applied] == ["a"]
    assert precious.read_text() == "do not touch"
    assert precious.stat().st_uid == os.getuid()


def test_lock_and_holder_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files 0644 unless created otherwise
    try:
        lock = FileLock(tmp_path / "app.lock")
        lock.acquire(Deadline(5))
        try:
            for path in (lock.path, lock.holder_path):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        finally:
            lock.release()
    finally:
        os.umask(old)


def test_sqlite_default_lock_beside_the_database_in_a_shared_dir(tmp_path: Path) -> None:
    shared = shared_dir(tmp_path, 0o1777)
    database = TestDatabase("sqlite", f"sqlite:///{shared / 'app.db'}", shared)
    database.create_effects_table()
    old = os.umask(0o022)
    try:
        result = seedguard.apply(database.url, seeds=[unit("a")])
    finally:
        os.umask(old)
    assert [u.name for u in result.applied] == ["a"]
    lock = shared / "app.db.seedguard.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702], ids=oct)
def test_default_lock_dir_writable_by_others_is_refused(tmp_path: Path, mode: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    directory = tmp_path / f"seedguard-{os.getuid()}"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ConfigError, match="writable by other users") as info:
        default_lock_path(sa.engine.make_url("postgresql+psycopg://app@db.example/app"))
    assert str(directory) in str(info.value) and "chmod 700" in str(info.value)
    assert stat.S_IMODE(directory.stat().st_mode) == mode  # left for its owner to inspect


def test_default_lock_key_ignores_secret_parameters() -> None:
    # A password given as a query parameter neither reaches the lock's name
    # nor splits the lock when it changes.
    url = sa.engine.make_url("postgresql+psycopg://app@db.example/app")
    path = default_lock_path(url)
    assert default_lock_path(url.update_query_dict({"password": "Sg-Lock-S3cret"})) == path
