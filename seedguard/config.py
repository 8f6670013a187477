"""Configuration: where the database, the seeds and the lock are, first found wins.

Sources, in order, for every key:

1. explicit arguments (or CLI options; ``bind`` as a URL or an Engine);
2. inside a Flask app context: the app's ``SEEDGUARD_*`` config (plus the
   ``seeds=`` given to its ``SeedGuard`` when ``SEEDGUARD_SEEDS`` is unset),
   and for the database, after ``SEEDGUARD_URL`` in that config, the app's
   Flask-SQLAlchemy engine;
3. ``SEEDGUARD_*`` environment variables;
4. ``[tool.seedguard]`` in the nearest ``pyproject.toml`` above the current
   directory, within its repository and file system, if owned by the
   current user or root (seedguard.trust).

The database is one choice, a URL or an Engine, made by the first source
that has either: inside an app context the app's own database wins over an
exported ``SEEDGUARD_URL`` or a project-wide ``url``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seedguard import settings as _fields
from seedguard.errors import ConfigError
from seedguard.settings import DEFAULT_LEASE as DEFAULT_LEASE
from seedguard.settings import DEFAULT_LEDGER_TABLE as DEFAULT_LEDGER_TABLE
from seedguard.settings import MAX_LEASE as MAX_LEASE
from seedguard.settings import MIN_LEASE as MIN_LEASE
from seedguard.settings import Invalid
from seedguard.settings import LockMode as LockMode

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from seedguard.registry import SeedsSpec



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
    lease: float = DEFAULT_LEASE
    sources: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The dataclass repr would print the URL with its password.
        from dataclasses import fields

        from seedguard.redact import redact_url

        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "url" and value:
                value = redact_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"


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
    lease: float | None = None,
    cwd: Path | None = None,
    engine_spec: str | None = None,
) -> Settings:
    """Merge the sources into one :class:`Settings`, validating every value.

    ``engine_spec`` (``--engine``; ``engine`` in the other sources) names the
    app's own engine as ``MODULE:ATTR``; it is an alternative to ``url``: the
    first source that has either chooses the database, and it is imported
    only then (:mod:`seedguard.appengine`).
    """
    explicit: dict[str, Any] = {
        "seeds": seeds,
        "contexts": list(contexts) if contexts is not None else None,
        "lock_path": os.fspath(lock_path) if lock_path is not None else None,
        "lock_timeout": lock_timeout,
        "alembic_config": alembic_config,
        "ledger_table": ledger_table,
        "ledger_schema": ledger_schema,
        "lock_mode": lock_mode,
        "engine": engine_spec,
        "lease": lease,
    }
    engine: Engine | None = None
    if isinstance(bind, str):
        explicit["url"] = bind
    elif bind is not None:
        engine = bind
    # Each layer: (source, values, the Engine it offers after its own url).
    layers: list[tuple[str, Mapping[str, Any], Engine | None]] = [
        ("argument", explicit, engine)]
    flask_layer, flask_engine = _flask_layer()
    if flask_layer is not None:
        layers.append(("Flask app config", flask_layer, flask_engine))
    layers.append(("environment", _environment_layer(), None))
    layers.append((*_pyproject_layer(cwd or Path.cwd()), None))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    engine = None
    for source, layer, layer_engine in layers:
        if engine is None and "url" not in values and layer.get("engine") not in (None, ""):
            engine = _app_engine(source, layer, layer_engine)
            sources["url"] = f"{source} (engine {layer['engine']})"
        for key in _fields.NAMES:
            if key == "engine":
                continue  # chosen above, as the database
            if key == "url" and engine is not None:
                continue  # the database is already chosen, as an Engine
            if key not in values and layer.get(key) not in (None, ""):
                values[key] = layer[key]
                sources[key] = source
        if engine is None and "url" not in values and layer_engine is not None:
            engine = layer_engine
            sources["url"] = "argument" if source == "argument" else "Flask-SQLAlchemy engine"
    lock_timeout_value = _timeout(values.get("lock_timeout"))
    return Settings(
        url=values.get("url"),
        engine=engine,
        seeds=values.get("seeds"),
        contexts=_contexts(values.get("contexts")),
        lock_path=values.get("lock_path"),
        lock_timeout=lock_timeout_value,
        alembic_config=values.get("alembic_config"),
        ledger_table=_identifier(values.get("ledger_table", DEFAULT_LEDGER_TABLE), "ledger_table"),
        ledger_schema=_identifier(values.get("ledger_schema"), "ledger_schema"),
        lock_mode=_lock_mode(values.get("lock_mode", "session")),
        lease=_lease(values.get("lease"), lock_timeout_value, sources),
        sources=sources,
    )


def _app_engine(source: str, layer: Mapping[str, Any], layer_engine: Engine | None) -> Engine:
    """The engine a layer's ``engine = "MODULE:ATTR"`` names; it may not also give a URL."""
    spec = layer["engine"]
    where = {"argument": "--engine", "environment": "SEEDGUARD_ENGINE"}.get(source, source)
    if layer.get("url") not in (None, "") or layer_engine is not None:
        given = ("a database URL" if layer.get("url") not in (None, "")
                 else "an Engine (bind)")
        raise ConfigError(
            f"engine {spec!r} ({where}) and {given} are both given; the engine already "
            "says which database: drop one"
        )
    from seedguard.appengine import import_engine

    return import_engine(spec, where=where)


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start``, within its repository and file system.

    The search stops at a repository's root (a directory holding ``.git`` or
    ``.hg``) and never crosses onto another file system (a mount point), as
    git (``GIT_DISCOVERY_ACROSS_FILESYSTEM``) and black's project-root
    search do: a project's settings never come from a directory above it
    that someone else may own.
    """
    # Plain strings and os.path: this runs at every apply(), and a pathlib
    # object per parent directory cost more than the stat calls themselves.
    directory = os.path.abspath(start)
    try:
        device = os.stat(directory).st_dev
    except OSError:
        return None
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            return Path(candidate)
        if any(os.path.lexists(os.path.join(directory, marker)) for marker in _REPO_MARKERS):
            return None
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        try:
            if os.stat(parent).st_dev != device:
                return None
        except OSError:
            return None
        directory = parent


# A repository's root: `.git` is a directory, or a file in a worktree or submodule.
_REPO_MARKERS = (".git", ".hg")


def _flask_layer() -> tuple[Mapping[str, Any] | None, Engine | None]:
    from seedguard import flaskapp

    app = flaskapp.current_app()
    if app is None:
        return None, None
    layer = _checked(flaskapp.config_values(app, {item.name: item.flask_key
                                                   for item in _fields.FIELDS}),
                     "in the Flask app config", _flask_key, loose=True)
    ext = flaskapp.extension(app)
    if ext is not None and layer.get("seeds") is None:
        layer["seeds"] = getattr(ext, "seeds", None)
    return layer, flaskapp.default_engine(app)


def _environment_layer() -> dict[str, Any]:
    env = os.environ
    return _checked({item.name: env.get(item.env) for item in _fields.FIELDS},
                    "in the environment", _env_name)


def _pyproject_layer(cwd: Path) -> tuple[str, Mapping[str, Any]]:
    path = find_pyproject(cwd)
    if path is None:
        return ("pyproject.toml", {})
    data = _read_toml(path)
    if data is None:
        return ("pyproject.toml", {})
    section = data.get("tool", {}).get("seedguard", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.seedguard] must be a table")
    unknown = sorted(set(section) - set(_fields.NAMES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.seedguard]: {', '.join(unknown)}; "
            f"known keys: {', '.join(_fields.NAMES)}"
        )
    layer = _checked(section, f"in {path} [tool.seedguard]", str)
    # Paths in pyproject are relative to the file, not to wherever the command runs.
    for key in ("lock_path", "alembic_config"):
        if isinstance(layer.get(key), str):
            layer[key] = str((path.parent / layer[key]).resolve())
    if isinstance(layer.get("url"), str):
        layer["url"] = _sqlite_relative_to(layer["url"], path.parent)
    return (f"{path}", layer)


# sqlite[+driver]:///relative/path[?query]; four slashes is an absolute path.
_RELATIVE_SQLITE = re.compile(r"(sqlite(?:\+\w+)?:///)(?!/)([^?]+)(\?.*)?", re.DOTALL)


def _sqlite_relative_to(url: str, base: Path) -> str:
    """A relative SQLite file in ``url`` made absolute against ``base`` (the pyproject's folder).

    As alembic's ``%(here)s``: run from a subdirectory, ``sqlite:///app.db``
    would otherwise open (and create) a second, empty database there.
    """
    match = _RELATIVE_SQLITE.fullmatch(url)
    if match is None:
        return url
    prefix, database, query = match.group(1), match.group(2), match.group(3) or ""
    if database == ":memory:" or database.startswith("file:"):
        return url
    return f"{prefix}{(base / database).resolve()}{query}"


_toml_cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_UNTRUSTED_INSTEAD = ("give the settings explicitly (SEEDGUARD_* environment variables or the "
                      "command's options)")


def _read_toml(path: Path) -> dict[str, Any] | None:
    """``path`` parsed, re-read only when its size or mtime changed (apply() at every start-up).

    None (after a warning) when the file's owner is neither the current user
    nor root (seedguard.trust). The owner is taken from the
    opened file, so the file checked is the file read.
    """
    from seedguard.trust import trusted_owner, warn_untrusted

    # Imported here: most start-ups find no pyproject.toml, and tomllib
    # compiles its patterns when imported.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    try:
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            if not trusted_owner(info.st_uid):
                warn_untrusted(path, info.st_uid, instead=_UNTRUSTED_INSTEAD)
                return None
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            cached = _toml_cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    _toml_cache[path] = (stamp, data)
    return data


def _env_name(key: str) -> str:
    return _fields.field(key).env


def _flask_key(key: str) -> str:
    return _fields.field(key).flask_key


def _checked(layer: Mapping[str, Any], where: str, name: Callable[[str], str], *,
             loose: bool = False) -> dict[str, Any]:
    """``layer`` with every value checked by type.

    A wrong value is a ConfigError naming the key as that source spells it,
    the value, the source and what was expected. ``loose``: a Python source
    (Flask config), where ``seeds`` may also be a module, a Registry or units
    and paths may be ``os.PathLike``.
    """
    for key, value in layer.items():
        known = _fields.BY_NAME.get(key)
        if known is None or value is None or value == "":
            continue
        try:
            known.parse(value, loose)
        except Invalid as err:
            raise ConfigError(
                f"{name(key)} = {value!r} {where}: expected {key} to be {err}") from None
    return dict(layer)


def _argument(key: str, value: Any) -> Any:
    """``value`` parsed by ``key``'s field, for the final settings (arguments included)."""
    if value is None:
        return None
    try:
        return _fields.field(key).parse(value, True)
    except Invalid as err:
        raise ConfigError(f"{key} = {value!r}: expected {err}") from None


# What resolve() applies to the merged values, arguments included.

def _contexts(value: Any) -> tuple[str, ...]:
    return _argument("contexts", value) or ()


def _timeout(value: Any) -> float | None:
    return _argument("lock_timeout", value)  # type: ignore[no-any-return]


def _identifier(value: Any, what: str) -> Any:
    return _argument(what, value)


def _lock_mode(value: Any) -> LockMode:
    mode: LockMode = _argument("lock_mode", value)
    return mode


def _lease(value: Any, lock_timeout: float | None, sources: Mapping[str, str]) -> float:
    """The lease, checked against the lock timeout when both were configured.

    A default lease longer than a short ``lock_timeout`` is fine (the waiter
    just gives up first, as it always did); a lease chosen explicitly is a
    promise that waiters can take over, and one longer than the wait cannot
    be kept.
    """
    lease: float | None = _argument("lease", value)
    if lease is None:
        return DEFAULT_LEASE
    if lock_timeout is not None and lease > lock_timeout:
        raise ConfigError(
            f"lease = {lease:g} s ({sources.get('lease', 'argument')}) is longer than "
            f"lock_timeout = {lock_timeout:g} s ({sources.get('lock_timeout', 'argument')}): "
            "a waiter would give up before it could take over from a holder that vanished; "
            "raise {lock_timeout} or lower {lease}",
            settings=("lock_timeout", "lease"),
        )
    return lease
