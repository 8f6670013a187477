"""Every configuration value is checked by type where it is read, and a wrong one is a
ConfigError naming the key, the value, where it came from and what was expected."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from _support import unit

import seedguard
from seedguard import ConfigError
from seedguard.config import resolve

SCRIPT = Path(sys.executable).with_name("seedguard")


def _pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.seedguard]\n" + body + "\n")
    return path


@pytest.mark.parametrize(("line", "key", "shown", "expected"), [
    ("seeds = 42", "seeds", "42", "a dotted module path"),
    ("url = 5", "url", "5", "a database URL"),
    ("lock_path = 7", "lock_path", "7", "a path"),
    ("contexts = {a = 1}", "contexts", "{'a': 1}", "a list of context names"),
    ("contexts = [1, 2]", "contexts", "[1, 2]", "a list of context names"),
    ("lock_timeout = true", "lock_timeout", "True", "a number of seconds"),
    ("lock_timeout = 'soon'", "lock_timeout", "'soon'", "a number of seconds"),
    ("alembic_config = ['a']", "alembic_config", "['a']", "a path"),
    ("ledger_table = 3", "ledger_table", "3", "a plain SQL identifier"),
    ("lock_mode = 1", "lock_mode", "1", "'session' or 'transaction'"),
])
def test_pyproject_values_of_the_wrong_type(tmp_path: Path, line: str, key: str, shown: str,
                                            expected: str) -> None:
    path = _pyproject(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        resolve(cwd=tmp_path)
    message = str(info.value)
    for part in (key, shown, str(path), expected):
        assert part in message, message


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("SEEDGUARD_LOCK_TIMEOUT", "true", "a number of seconds"),
    ("SEEDGUARD_LOCK_TIMEOUT", "nan", "a number of seconds"),
    ("SEEDGUARD_LOCK_TIMEOUT", "-1", ">= 0"),
    ("SEEDGUARD_LEDGER_TABLE", "x" * 56, "at most 55"),
    ("SEEDGUARD_LOCK_MODE", "table", "'session' or 'transaction'"),
])
def test_environment_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str,
                            value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        resolve(cwd=tmp_path)
    message = str(info.value)
    assert name in message and value in message and expected in message, message


@pytest.mark.parametrize("value", [True, False, math.nan, -1, -math.inf, "soon", [1]])
def test_bad_lock_timeout_arguments(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="lock_timeout"):
        resolve(lock_timeout=value, cwd=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "seconds"), [
    (math.inf, None), ("inf", None), (0, 0.0), (2, 2.0), (1e7, 1e7), ("0.5", 0.5),
])
def test_lock_timeout_values_that_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       value: object, seconds: float | None) -> None:
    if isinstance(value, str):
        monkeypatch.setenv("SEEDGUARD_LOCK_TIMEOUT", value)
        settings = resolve(cwd=tmp_path)
    else:
        settings = resolve(lock_timeout=value, cwd=tmp_path)  # type: ignore[arg-type]
    assert settings.lock_timeout == seconds


def test_inf_in_a_higher_source_is_not_skipped(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    _pyproject(tmp_path, "lock_timeout = 5")
    monkeypatch.setenv("SEEDGUARD_LOCK_TIMEOUT", "inf")
    assert resolve(cwd=tmp_path).lock_timeout is None  # no limit, not the 5 s below it


def test_ledger_table_fits_every_name_derived_from_it(tmp_path: Path) -> None:
    longest = "t" * 55  # its version table, t..t_version, is 63 characters
    assert resolve(ledger_table=longest, cwd=tmp_path).ledger_table == longest
    with pytest.raises(ConfigError, match="_version"):
        resolve(ledger_table=longest + "t", cwd=tmp_path)


def test_ledger_table_of_the_longest_length_works(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDGUARD_LEDGER_TABLE", "l" * 55)
    result = seedguard.apply(f"sqlite:///{tmp_path / 'app.db'}", seeds=[unit("roles", fn=_nothing)])
    assert [u.name for u in result.applied] == ["roles"]


def _nothing(session: object) -> None:
    pass


def test_flask_config_values_of_the_wrong_type(tmp_path: Path) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.config["SEEDGUARD_LOCK_TIMEOUT"] = True
    with app.app_context(), pytest.raises(ConfigError) as info:
        resolve(cwd=tmp_path)
    message = str(info.value)
    assert "SEEDGUARD_LOCK_TIMEOUT" in message and "True" in message
    assert "Flask app config" in message and "a number of seconds" in message


def test_the_console_script_reports_a_wrong_type_in_one_line(tmp_path: Path) -> None:
    _pyproject(tmp_path, f'url = "sqlite:///{tmp_path / "app.db"}"\nseeds = 42')
    proc = subprocess.run([str(SCRIPT), "status"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "seeds" in lines[0] and "42" in lines[0] and "pyproject.toml" in lines[0]
