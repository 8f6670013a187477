"""The application's own engine, named as ``MODULE:ATTR`` (``app.core.db:engine``).

``seedguard --engine``, ``SEEDGUARD_ENGINE`` and ``[tool.seedguard] engine``
run on the engine the application itself uses, so its URL, its pool and its
connect arguments are seedguard's too, and nothing has to copy (and
normalise) the app's ``DATABASE_URL`` into ``SEEDGUARD_URL``. The module is
imported as ``flask --app`` imports an app: with the current directory on
``sys.path``. Every way this can fail is a :class:`~seedguard.ConfigError`
that names what could not be imported.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

EXAMPLE = "app.core.db:engine"


def import_engine(spec: str, *, where: str = "") -> Engine:
    """The ``Engine`` that ``spec`` (``MODULE:ATTR``) names; an ``AsyncEngine``'s ``sync_engine``.

    :param spec: ``package.module:attribute`` (the attribute may be dotted).
    :param where: where ``spec`` was set, for messages (``"--engine"``,
        ``"SEEDGUARD_ENGINE"``, a pyproject.toml).

    The sync side of an ``AsyncEngine`` is what seedguard's runner drives; it
    works only on an event loop (:func:`seedguard.apply_async`, or the
    ``seedguard`` command, which runs on one for an async engine).
    """
    origin = f"engine {spec!r}" + (f" ({where})" if where else "")
    module_name, sep, attribute = spec.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{origin}: expected MODULE:ATTR, e.g. {EXAMPLE}")
    _current_directory_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name == err.name
                                     or module_name.startswith(err.name + ".")):
            raise ConfigError(
                f"{origin}: no module named {err.name!r} (searched from {os.getcwd()}); run "
                "the command from your project's folder, or add that folder to PYTHONPATH"
            ) from err
        raise ConfigError(f"{origin}: importing {module_name} failed: "
                          f"ModuleNotFoundError: {err}") from err
    except Exception as err:
        raise ConfigError(f"{origin}: importing {module_name} failed: "
                          f"{type(err).__name__}: {err}") from err
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            engines = sorted(name for name, value in vars(module).items()
                             if _is_engine(value) or _is_async_engine(value))
            hint = (f"; engines there: {', '.join(engines)}" if engines
                    else "; it defines no engine at module level")
            raise ConfigError(f"{origin}: module {module_name} has no attribute "
                              f"{attribute!r}{hint}")
        found = getattr(found, part)
    if _is_async_engine(found):
        return found.sync_engine  # type: ignore[no-any-return]
    if _is_engine(found):
        return found  # type: ignore[no-any-return]
    raise ConfigError(
        f"{origin}: {module_name}.{attribute} is a {type(found).__name__}, not a "
        "SQLAlchemy Engine or AsyncEngine (create_engine() / create_async_engine())"
    )


def _current_directory_importable() -> None:
    # As `flask --app` and `python -m` do: the project's own packages import
    # from where the command runs.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _is_engine(value: object) -> bool:
    from sqlalchemy.engine import Engine

    return isinstance(value, Engine)


def _is_async_engine(value: object) -> bool:
    # The asyncio extension is imported already if the app made an AsyncEngine.
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(value, module.AsyncEngine)
