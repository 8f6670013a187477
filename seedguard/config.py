"""Configuration: where the database, the seeds and the lock are, first found wins.

Sources, in order: explicit arguments (or CLI options); inside a Flask app
context, the app's ``SEEDGUARD_*`` config and its Flask-SQLAlchemy engine;
``SEEDGUARD_*`` environment variables; ``[tool.seedguard]`` in the nearest
``pyproject.toml`` above the current directory.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from seedguard.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from seedguard.registry import SeedsSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_LEDGER_TABLE = "seedguard_ledger"
LockMode = Literal["session", "transaction"]
"""``session``: one database lock for the whole run; ``transaction``: one per
unit's transaction (PostgreSQL behind a transaction-pooling PgBouncer)."""
_LOCK_MODES: dict[str, LockMode] = {"session": "session", "transaction": "transaction"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_KEYS = ("url", "seeds", "contexts", "lock_path", "lock_timeout", "alembic_config",
         "ledger_table", "ledger_schema", "lock_mode")


@dataclass(frozen=True)
class Settings:
    """Everything an operation needs to know, resolved from every source.

    ``sources`` records where each value came from, for ``status`` and errors.
    """

    url: str | None = None
    engine: Engine | None = None
    seeds: SeedsSpec = None
    contexts: tuple[str, ...] = ()
    lock_path: str | None = None
    lock_timeout: float | None = None
    alembic_config: str | None = None
    ledger_table: str = DEFAULT_LEDGER_TABLE
    ledger_schema: str | None = None
    lock_mode: LockMode = "session"
    sources: Mapping[str, str] = field(default_factory=dict)


def resolve(
    bind: Engine | str | None = None,
    *,
    seeds: SeedsSpec = None,
    contexts: Iterable[str] | None = None,
    lock_path: str | os.PathLike[str] | None = None,
    lock_timeout: float | None = None,
    alembic_config: str | None = None,
    ledger_table: str | None = None,
    ledger_schema: str | None = None,
    lock_mode: str | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge the sources into one :class:`Settings`, validating every value."""
    explicit: dict[str, Any] = {
        "seeds": seeds,
        "contexts": list(contexts) if contexts is not None else None,
        "lock_path": os.fspath(lock_path) if lock_path is not None else None,
        "lock_timeout": lock_timeout,
        "alembic_config": alembic_config,
        "ledger_table": ledger_table,
        "ledger_schema": ledger_schema,
        "lock_mode": lock_mode,
    }
    engine: Engine | None = None
    if isinstance(bind, str):
        explicit["url"] = bind
    elif bind is not None:
        engine = bind
    layers: list[tuple[str, Mapping[str, Any]]] = [("argument", explicit)]
    flask_layer, flask_engine = _flask_layer()
    if flask_layer is not None:
        layers.append(("Flask app config", flask_layer))
    layers.append(("environment", _environment_layer()))
    layers.append(_pyproject_layer(cwd or Path.cwd()))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key in _KEYS:
            if key not in values and layer.get(key) not in (None, ""):
                values[key] = layer[key]
                sources[key] = source
    if engine is None and "url" not in values and flask_engine is not None:
        engine = flask_engine
        sources["url"] = "Flask-SQLAlchemy engine"
    elif engine is not None:
        sources["url"] = "argument"
    return Settings(
        url=values.get("url"),
        engine=engine,
        seeds=values.get("seeds"),
        contexts=_contexts(values.get("contexts")),
        lock_path=values.get("lock_path"),
        lock_timeout=_timeout(values.get("lock_timeout")),
        alembic_config=values.get("alembic_config"),
        ledger_table=_identifier(values.get("ledger_table", DEFAULT_LEDGER_TABLE), "ledger_table"),
        ledger_schema=_identifier(values.get("ledger_schema"), "ledger_schema"),
        lock_mode=_lock_mode(values.get("lock_mode", "session")),
        sources=sources,
    )


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start``."""
    # Plain strings and os.path: this runs at every apply(), and a pathlib
    # object per parent directory cost more than the stat calls themselves.
    directory = os.fspath(start)
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            return Path(candidate)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _flask_layer() -> tuple[Mapping[str, Any] | None, Engine | None]:
    # Only look when the app already imported Flask: importing it here would
    # cost every non-Flask user its import time.
    if "flask" not in sys.modules:
        return None, None
    from flask import current_app, has_app_context

    if not has_app_context():
        return None, None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    layer = {
        key: app.config.get(f"SEEDGUARD_{key.upper()}")
        for key in _KEYS
    }
    ext = app.extensions.get("seedguard")
    if ext is not None and layer.get("seeds") is None:
        layer["seeds"] = getattr(ext, "seeds", None)
    engine = None
    sqlalchemy_ext = app.extensions.get("sqlalchemy")
    if sqlalchemy_ext is not None:
        engine = sqlalchemy_ext.engine
    return layer, engine


def _environment_layer() -> dict[str, Any]:
    env = os.environ
    return {key: env.get(f"SEEDGUARD_{key.upper()}") for key in _KEYS}


def _pyproject_layer(cwd: Path) -> tuple[str, Mapping[str, Any]]:
    path = find_pyproject(cwd)
    if path is None:
        return ("pyproject.toml", {})
    data = _read_toml(path)
    section = data.get("tool", {}).get("seedguard", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.seedguard] must be a table")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.seedguard]: {', '.join(unknown)}; "
            f"known keys: {', '.join(_KEYS)}"
        )
    layer = dict(section)
    # Paths in pyproject are relative to the file, not to wherever the command runs.
    for key in ("lock_path", "alembic_config"):
        if isinstance(layer.get(key), str):
            layer[key] = str((path.parent / layer[key]).resolve())
    return (f"{path}", layer)


_toml_cache: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def _read_toml(path: Path) -> dict[str, Any]:
    """``path`` parsed, re-read only when its size or mtime changed (apply() at every start-up)."""
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        cached = _toml_cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    _toml_cache[path] = (stamp, data)
    return data


def _contexts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = [str(item) for item in value]
    else:
        raise ConfigError(f"contexts must be a list of names, not {value!r}")
    return tuple(item.strip() for item in items if item.strip())


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"lock_timeout must be a number of seconds, not {value!r}") from err
    if seconds < 0:
        raise ConfigError(f"lock_timeout must be >= 0 seconds, not {value!r}")
    return seconds


def _identifier(value: Any, what: str) -> Any:
    # Table and schema names end up in DDL and lock keys: accept only plain
    # identifiers rather than quoting arbitrary strings.
    if value is None:
        return None
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(
            f"{what} must be a plain SQL identifier (letters, digits, _; at most 63), "
            f"not {value!r}"
        )
    return value


def _lock_mode(value: Any) -> LockMode:
    mode = _LOCK_MODES.get(value) if isinstance(value, str) else None
    if mode is None:
        raise ConfigError(
            f"lock_mode must be 'session' or 'transaction' (for PgBouncer transaction "
            f"pooling), not {value!r}"
        )
    return mode
