"""A password never appears in any output, however the URL spells it.

Every command, human and ``--json``, on PostgreSQL (psycopg, asyncpg) and
MariaDB (PyMySQL, aiomysql), with a connection that works and one that
fails; the secret as the URL's password (percent-encoded ``@`` and ``:``),
as a query parameter (``password``, ``passwd``, ``sslpassword``), and as a
password with an unescaped ``@``.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from _support import TestDatabase, seeds_source, write_module
from click.testing import CliRunner
from conftest import MYSQL_URL, make_database

import seedguard
from seedguard.cli import cli

# Distinctive, and each spelled so a partial leak shows too.
USERINFO_SECRET = "Sg-Userinfo@S3cr3t:Tail42"
QUERY_SECRET = "SgQueryS3cr3tZeta"
UNESCAPED_SECRET = "Pw@TailOfTheSecret99"
LEAK_MARKS = ("S3cr3t", "Tail42", "TailOfTheSecret99", "Sg-Userinfo", "SgQuery")


def assert_clean(text: str, where: str) -> None:
    for mark in LEAK_MARKS:
        assert mark not in text, f"{mark!r} leaked in {where}: {text[:2000]}"


# -- the rule, spelling by spelling ------------------------------------------------------


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://app:{urllib.parse.quote(USERINFO_SECRET, safe='')}@db/app",
    f"postgresql+psycopg://app@db/app?password={QUERY_SECRET}",
    f"postgresql+psycopg://app@db/app?sslpassword={QUERY_SECRET}&application_name=x",
    f"postgresql+psycopg://app@db/app?passfile=/home/app/{QUERY_SECRET}",
    f"mysql+pymysql://app@db/app?passwd={QUERY_SECRET}",
    f"mysql+aiomysql://app@db/app?password={QUERY_SECRET}",
    f"postgresql+asyncpg://app:{UNESCAPED_SECRET}@127.0.0.1:5432/app",
    "postgresql+psycopg://app:Sg-Userinfo:S3cr3t:Tail42@db/app",  # unescaped ':'
    f"postgresql+psycopg://app:{UNESCAPED_SECRET}@db:notaport/app",  # does not parse
])
def test_every_spelling_is_hidden_when_a_url_is_shown(url: str) -> None:
    from seedguard.redact import redact, redact_url, without_secrets

    shown = redact_url(url)
    assert_clean(shown, "redact_url")
    assert "***" in shown and "app" in shown
    assert_clean(without_secrets(url), "without_secrets")
    # ... and wherever a driver's message echoes it, in any encoding.
    parsed = sa.engine.make_url(url) if ":notaport" not in url else None
    echoes = [url, urllib.parse.unquote(url)]
    if parsed is not None:
        echoes += [repr(parsed), str(dict(parsed.query)), f"password={parsed.password}"]
    for echo in echoes:
        assert_clean(redact(f"driver says: {echo}", url), f"redact({echo!r})")


def test_what_is_not_secret_stays_readable() -> None:
    from seedguard.redact import redact_url, without_secrets

    url = "postgresql+psycopg://app:pw12345@db.example:5433/app?application_name=web&sslmode=require"
    assert redact_url(url) == ("postgresql+psycopg://app:***@db.example:5433/app"
                               "?application_name=web&sslmode=require")
    assert without_secrets(url) == ("postgresql+psycopg://app@db.example:5433/app"
                                    "?application_name=web&sslmode=require")


# -- every command ------------------------------------------------------------------------


@dataclass
class Target:
    db: TestDatabase
    url: str
    secrets: tuple[str, ...]


DRIVERS = {  # driver -> (database kind, secret query key)
    "psycopg": ("postgresql", "sslpassword"),
    "pymysql": ("mariadb", "passwd"),
    "asyncpg": ("postgresql", "password"),
    "aiomysql": ("mariadb", "password"),
}
SCHEMES = {"psycopg": "postgresql+psycopg", "pymysql": "mysql+pymysql",
           "asyncpg": "postgresql+asyncpg", "aiomysql": "mysql+aiomysql"}


@contextlib.contextmanager
def _mariadb_user(database: str, password: str) -> Iterator[str]:
    """A MariaDB account with ``password`` on ``database`` only (root has none here)."""
    name = f"sg_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(MYSQL_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{name}'@'%'"))
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
        admin.dispose()


@contextlib.contextmanager
def _target(driver: str, spelling: str, works: bool, tmp_path: Path) -> Iterator[Target]:
    kind, secret_key = DRIVERS[driver]
    secret = {"userinfo": USERINFO_SECRET, "query": QUERY_SECRET,
              "unescaped": UNESCAPED_SECRET}[spelling]
    databases = make_database(kind, tmp_path)
    database = next(databases)
    stack = contextlib.ExitStack()
    with stack:
        base = sa.engine.make_url(database.url).set(drivername=SCHEMES[driver])
        if kind == "mariadb" and works:
            base = base.set(username=stack.enter_context(
                _mariadb_user(str(base.database), secret)))
        if not works and kind == "postgresql":
            base = base.set(port=1)  # nothing listens there
        # (a failing MariaDB connection: root has no password, so any is refused)
        if spelling == "userinfo":
            url = base.set(password=secret).render_as_string(hide_password=False)
        elif spelling == "query":
            url = base.update_query_dict({secret_key: secret}).render_as_string(
                hide_password=False)
        else:  # typed as it is: make_url splits it at the first "@"
            scheme, rest = base.render_as_string(hide_password=False).split("://", 1)
            user, host = rest.split("@", 1)
            url = f"{scheme}://{user}:{secret}@{host}"
        try:
            yield Target(database, url, (secret,))
        finally:
            next(databases, None)


COMMANDS: list[tuple[str, ...]] = [
    ("status",), ("status", "--json"), ("check",), ("check", "--json"),
    ("upgrade", "--dry-run"), ("upgrade", "--dry-run", "--json"),
    ("plan",), ("plan", "--json"), ("plan", "--out", "plan.json"),
    ("-v", "upgrade"), ("upgrade", "--json"), ("upgrade", "--plan", "plan.json"),
    ("history",), ("history", "--json"),
    ("forget", "b", "--yes"), ("forget", "b", "--yes", "--json"),
    ("stamp", "b", "--yes"), ("stamp", "b", "--yes", "--json"),
    ("resolve", "b", "--retry", "--yes"), ("resolve", "b", "--retry", "--yes", "--json"),
    ("upgrade", "--schema"), ("upgrade", "--schema", "--json"),
    ("init",),
]
CASES = [
    pytest.param(driver, spelling, works, id=f"{driver}-{spelling}-{'ok' if works else 'fail'}",
                 marks=[pytest.mark.slow] if driver in ("asyncpg", "aiomysql") else [])
    for driver in DRIVERS
    for spelling, works in [("userinfo", True), ("userinfo", False), ("query", True),
                            ("query", False), ("unescaped", False)]
]


# PyMySQL still accepts ?passwd=, with a DeprecationWarning (which the suite
# turns into an error): the spelling is what is tested here.
@pytest.mark.filterwarnings("ignore:'passwd' is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("driver", "spelling", "works"), CASES)
def test_no_command_prints_the_password(driver: str, spelling: str, works: bool,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with _target(driver, spelling, works, tmp_path) as target:
        target.db.create_effects_table()
        work = tmp_path / "project"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.syspath_prepend(str(work))
        module = f"secret_seeds_{uuid.uuid4().hex[:8]}"
        write_module(work, module, seeds_source(["a", "b"]))
        caplog.set_level(logging.DEBUG)
        runner = CliRunner()
        codes, outputs = {}, {}
        for command in COMMANDS:
            args = ["--url", target.url, "--seeds", module, *command]
            result = runner.invoke(cli, args)
            codes[" ".join(command)] = result.exit_code
            outputs[" ".join(command)] = result.output
            where = f"`seedguard {' '.join(command)}` (exit {result.exit_code})"
            assert_clean(result.stdout + result.stderr, where)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                raise result.exception
        assert_clean(caplog.text, "the logs")
        assert_clean((work / "pyproject.toml").read_text(), "pyproject.toml written by init")
        for path in work.iterdir():
            if path.is_file() and path.suffix != ".py":
                assert_clean(path.read_text(errors="replace"), str(path))
        if works:
            assert codes["-v upgrade"] == 0, (codes, outputs["-v upgrade"])
            assert sorted(target.db.effects()) == ["a", "b"]
        else:
            assert codes["-v upgrade"] == 2 and codes["status --json"] == 2, (codes, outputs)
            assert target.db.effects() == []


def test_password_not_in_apply_errors_for_a_query_secret(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://app@127.0.0.1:1/app?password={QUERY_SECRET}"
    with pytest.raises(seedguard.SeedguardError) as info:
        seedguard.apply(url, seeds=[], lock_timeout=1)
    assert_clean(f"{info.value} {info.value!r}", "the error")


def test_settings_repr_hides_the_password() -> None:
    from seedguard.config import resolve

    url = f"postgresql+psycopg://app:{urllib.parse.quote(USERINFO_SECRET, safe='')}@db/app"
    assert_clean(repr(resolve(url)), "repr(Settings)")
    assert_clean(repr(resolve(f"mysql+pymysql://app@db/app?passwd={QUERY_SECRET}")),
                 "repr(Settings)")
