"""Scaffolding: ``seedguard new`` (a seed module template) and ``seedguard init``
(a ``[tool.seedguard]`` section in ``pyproject.toml``).

Library calls like the rest of :mod:`seedguard.api`, which re-exports them:
they return what they wrote and never print or exit.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import sys
from pathlib import Path

from seedguard import config as _config
from seedguard.errors import ConfigError
from seedguard.registry import SeedsSpec
from seedguard.reports import WrittenFile
from seedguard.unit import validate_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["init", "new"]


_TEMPLATE = '''\
"""Seed unit "{name}": say what it puts in the database and why."""

from __future__ import annotations

import seedguard
from sqlalchemy.orm import Session


@seedguard.seed("{name}", version=1)
def {function}(session: Session) -> None:
    """Runs once per database: its work and its ledger row commit together.

    Raise ``version`` to apply a changed unit again; ``after=[...]`` orders it
    behind other units; ``contexts=[...]`` limits it to e.g. "dev".
    """
    # e.g. session.add(Role(name="admin")), or
    # session.execute(sqlalchemy.text("INSERT INTO roles (name) VALUES ('admin')"))
    raise NotImplementedError("write the seed work here, then remove this line")
'''


def new(name: str, *, directory: str | os.PathLike[str] | None = None,
        seeds: SeedsSpec = None) -> WrittenFile:
    """Write a seed module declaring one unit called ``name``; returns its path.

    ``directory``: where to write it; None means the directory of the
    configured seeds package (``seeds=``, SEEDGUARD_SEEDS, ``[tool.seedguard]``),
    so that discovery finds the new module. ``seeds``: that package, if not
    configured elsewhere.

    The template raises NotImplementedError, so an unedited template fails
    (and is not recorded) rather than being applied as an empty unit.
    """
    validate_name(name)
    module = re.sub(r"[^A-Za-z0-9_]", "_", name).lower()
    if not module.isidentifier() or keyword.iskeyword(module):
        module = f"seed_{module}"
    folder = Path(directory) if directory is not None else _seeds_directory(seeds)
    path = folder / f"{module}.py"
    if path.exists():
        raise ConfigError(f"{path} already exists; choose another name or --dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:
            fh.write(_TEMPLATE.format(name=name, function=module))
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    return WrittenFile(path, created=True)


def _seeds_directory(seeds: SeedsSpec) -> Path:
    """The folder of the configured seeds package: where its discovered modules live."""
    import importlib.util

    configured = _config.resolve(seeds=seeds).seeds
    if not isinstance(configured, str):
        raise ConfigError(
            "no seeds package configured, so there is nowhere discovery would find a new "
            "module: give --dir DIR, or --seeds PACKAGE (or seeds = \"myapp.seeds\" under "
            "[tool.seedguard])"
        )
    try:
        spec = importlib.util.find_spec(configured)
    except (ImportError, ValueError) as err:
        raise ConfigError(
            f"cannot find the seeds package {configured!r} ({err}); run from the project "
            "root, or give --dir DIR"
        ) from err
    if spec is None:
        raise ConfigError(
            f"seeds package {configured!r} not found (run from the project root, or give "
            "--dir DIR)"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise ConfigError(
            f"seeds {configured!r} is a single module ({spec.origin}), so a new module "
            "beside it would not be discovered; make it a package (a folder with "
            "__init__.py), or give --dir DIR"
        )
    return Path(locations[0])


def init(*, url: str | None = None, seeds: str | None = None,
         directory: str | os.PathLike[str] = ".") -> WrittenFile:
    """Add a ``[tool.seedguard]`` section with ``url`` and ``seeds`` to ``pyproject.toml``.

    ``url``: the database URL; a password in it is never written (the result's
    ``password_removed`` says it was left out: put the full URL in
    SEEDGUARD_URL). ``seeds``: the dotted seeds module or package.
    ``directory``: where the ``pyproject.toml`` is (default: the current one).
    Creates the file if missing; appends to it otherwise, and refuses when it
    already has the section (it is the user's: edit it there).
    """
    if not url and not seeds:
        raise ConfigError("nothing to write: give --url and/or --seeds (e.g. "
                          "`seedguard --url sqlite:///app.db --seeds myapp.seeds init`)")
    path = Path(directory) / "pyproject.toml"
    existing = ""
    if path.exists():
        try:
            existing = path.read_text(encoding="utf-8")
            data = tomllib.loads(existing)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from err
        tool = data.get("tool", {})
        if isinstance(tool, dict) and "seedguard" in tool:
            raise ConfigError(f"{path} already has a [tool.seedguard] section; edit it there")
    password_removed = False
    if url:
        url, password_removed = _without_password(url)
    lines = ["[tool.seedguard]"]
    # JSON string escapes are valid TOML basic-string escapes.
    lines += [f"{key} = {json.dumps(value)}" for key, value in (("url", url), ("seeds", seeds))
              if value]
    section = "\n".join(lines) + "\n"
    if existing and not existing.endswith("\n"):
        section = "\n" + section
    if existing:
        section = "\n" + section
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(section)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    return WrittenFile(path, created=not existing, password_removed=password_removed)


def _without_password(url: str) -> tuple[str, bool]:
    """``url`` without its password (pyproject.toml is committed; secrets go in SEEDGUARD_URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise ConfigError(
            "cannot parse the database URL: expected dialect+driver://user@host/database, "
            "e.g. postgresql+psycopg://app@localhost/app or sqlite:///app.db"
        ) from err
    from seedguard.redact import has_secrets, without_secrets

    if not has_secrets(parsed):
        return url, False
    return without_secrets(parsed), True
