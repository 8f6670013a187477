"""One field list for the settings (seedguard.settings): every source and front end derives
from it, and the API's explicit keywords agree with it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import seedguard
from seedguard.cli import cli
from seedguard.config import resolve
from seedguard.settings import FIELDS, NAMES

ROOT = Path(__file__).resolve().parent.parent

# apply()'s keywords that say what one call does, not where or how seedguard works.
PER_CALL = {"target", "dry_run", "strict", "on_event", "schema", "scoped_sessions",
            "session_class", "plan"}

# A valid value of each setting as a string, as the environment and pyproject spell it
# (engine imports an app's module: tests/test_engine_option.py covers it).
SAMPLES: dict[str, tuple[str, Any]] = {
    "url": ("sqlite:///sample.db", "sqlite:///sample.db"),
    "seeds": ("myapp.seeds", "myapp.seeds"),
    "contexts": ("dev,demo", ("dev", "demo")),
    "lock_timeout": ("7", 7.0),
    "lock_path": ("/tmp/sample.lock", "/tmp/sample.lock"),
    "alembic_config": ("/tmp/sample/alembic.ini", "/tmp/sample/alembic.ini"),
    "lease": ("6", 6.0),
    "lock_mode": ("transaction", "transaction"),
    "ledger_table": ("sample_ledger", "sample_ledger"),
    "ledger_schema": ("sample_schema", "sample_schema"),
}


def _setting_keywords(function: Any) -> set[str]:
    parameters = inspect.signature(function).parameters
    return {name for name, p in parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY} - PER_CALL


@pytest.mark.parametrize("function", [seedguard.apply, seedguard.apply_async],
                         ids=["apply", "apply_async"])
def test_apply_keywords_and_the_field_list_agree(function: Any) -> None:
    expected = {f.apply for f in FIELDS if f.apply not in (None, "bind")}
    assert _setting_keywords(function) == expected
    parameters = inspect.signature(function).parameters
    assert next(iter(parameters)) == "bind"
    for name in expected:
        assert parameters[name].default is None, name  # unset: the other sources decide
    if function is seedguard.apply:
        for name in ("bind", *expected):
            assert f":param {name}:" in (function.__doc__ or ""), name


def test_every_field_has_a_sample_here() -> None:
    assert set(SAMPLES) == set(NAMES) - {"engine"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_is_read_from_the_environment_and_pyproject(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, parsed = SAMPLES[name]
    field = next(f for f in FIELDS if f.name == name)
    toml = f'"{text}"' if name not in ("lock_timeout", "lease") else text
    (tmp_path / "pyproject.toml").write_text(f"[tool.seedguard]\n{name} = {toml}\n")
    from_file = resolve(cwd=tmp_path)
    # A relative SQLite file under [tool.seedguard] is relative to that pyproject.toml.
    in_file = f"sqlite:///{(tmp_path / 'sample.db').resolve()}" if name == "url" else parsed
    assert getattr(from_file, name) == in_file
    assert from_file.sources[name] == str(tmp_path / "pyproject.toml")
    monkeypatch.setenv(field.env, text)
    from_env = resolve(cwd=tmp_path)
    assert getattr(from_env, name) == parsed
    assert from_env.sources[name] == "environment"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_is_read_from_the_flask_config(name: str, tmp_path: Path) -> None:
    flask = pytest.importorskip("flask")
    text, parsed = SAMPLES[name]
    field = next(f for f in FIELDS if f.name == name)
    app = flask.Flask("settings_app")
    app.config[field.flask_key] = text
    with app.app_context():
        settings = resolve(cwd=tmp_path)
    assert getattr(settings, name) == parsed
    assert settings.sources[name] == "Flask app config"


def test_the_commands_global_options_are_the_fields_with_an_option() -> None:
    options = {f.option for f in FIELDS if f.option is not None}
    assert options == {"--url", "--engine", "--seeds", "--context", "--lock-timeout",
                       "--lock-path", "--alembic-config", "--lease"}

    def opts(command: Any) -> set[str]:
        return {o for p in command.params for o in getattr(p, "opts", ())}

    assert options <= opts(cli)
    for name, command in cli.commands.items():
        assert options <= opts(command), name  # also after the verb
    shown = CliRunner().invoke(cli, ["--help"], terminal_width=200).output
    for f in FIELDS:
        if f.option is not None:
            assert f"{f.option} {f.metavar}" in shown and f.help in shown, f.name


def test_the_configuration_reference_lists_every_field() -> None:
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    rows = {match.group(1): match.group(0) for match in
            re.finditer(r"^\| `(\w+)` \|.*$", page, re.MULTILINE)}
    assert set(rows) == set(NAMES)
    for f in FIELDS:
        row = rows[f.name]
        assert f"`{f.env}`" in row, f.name
        if f.option is not None:
            assert f"`{f.option} {f.metavar}" in row, f.name
        if f.apply not in (None, "bind"):
            assert f"| `{f.apply}` |" in row, f.name


def test_the_command_line_reference_names_every_global_option() -> None:
    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    section = page.split("## Global options", 1)[1].split("\n## ", 1)[0]
    for f in FIELDS:
        if f.option is not None:
            assert f"`{f.option}" in section, f.option
