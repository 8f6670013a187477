"""``sql_dir``: one unit per SQL file stem of a directory (see :mod:`seedguard.sqlfiles`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from seedguard.errors import DefinitionError
from seedguard.sqlfiles import declare
from seedguard.unit import SeedUnit


def sql_dir(
    path: str | os.PathLike[str],
    *,
    contexts: Iterable[str] | None = None,
    after: Iterable[str] = (),
    dialects: Iterable[str] | None = None,
    bind: str | None = None,
) -> list[SeedUnit]:
    """Declare one unit per ``<name>.sql`` file (and its ``<name>.<dialect>.sql`` variants).

    Each unit is named after its file's stem and runs the file's statements
    in its own transaction; it re-applies when one of its files changes.
    Returns the units, in the order of their names.

    :param path: the directory; a relative path is resolved against the
        directory of the file that calls ``sql_dir``.
    :param contexts: the contexts the units run in; None: always.
    :param after: names of units that must be applied before every one of these.
    :param dialects: the dialects the units are for (``"postgresql"``,
        ``"mysql"``, ``"mariadb"``, ``"sqlite"``); None: any that has a file.
    :param bind: the Flask-SQLAlchemy bind key of the database the units run
        on, as for :func:`seedguard.seed`; None: the default database.
    """
    from seedguard.registry import default_registry

    frame = sys._getframe(1)
    caller = frame.f_code.co_filename
    folder = Path(path)
    if not folder.is_absolute():
        base = Path(caller).parent if caller and not caller.startswith("<") else Path.cwd()
        folder = (base / folder).resolve()
    if not folder.is_dir():
        raise DefinitionError(f"sql_dir: {folder} is not a directory")
    module = str(frame.f_globals.get("__name__", ""))
    return declare(folder, default_registry, module=module,
                   origin=f"{caller}:{frame.f_lineno}",
                   contexts=contexts, after=after, dialects=dialects, bind=bind)
