"""The settings, listed once: each one's name, type, default, and how every source spells it.

:data:`FIELDS` is the one list. What reads or offers settings derives from it:
the configuration loader (:mod:`seedguard.config`: the ``SEEDGUARD_*``
environment variables, the Flask app's ``SEEDGUARD_*`` config keys, the keys
of ``[tool.seedguard]``, each value checked by the field's parser), the
command's global options (:mod:`seedguard.cli.options`), the pytest plugin's
options and ini keys, and the words an error uses for a setting it tells the
reader to change (:meth:`seedguard.errors.SeedguardError.spelled`). The API
keeps explicit, typed and documented keyword arguments; a test checks that
``apply()``'s keywords and this list agree.

This module imports nothing heavy: the pytest plugin reads it at start-up.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from seedguard.errors import keyword

DEFAULT_LEDGER_TABLE = "seedguard_ledger"
LockMode = Literal["session", "transaction"]
"""``session``: one database lock for the whole run; ``transaction``: one per
unit's transaction (PostgreSQL behind a transaction-pooling PgBouncer)."""
_LOCK_MODES: dict[str, LockMode] = {"session": "session", "transaction": "transaction"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
DEFAULT_LEASE = 30.0
"""Seconds: how long a holder whose host vanished keeps other appliers waiting."""
MIN_LEASE = 5.0
MAX_LEASE = 86400.0


class Invalid(ValueError):
    """A value of the wrong type or range; ``args[0]`` says what was expected."""


# -- parsers: ``parse(value, loose)`` returns the value or raises Invalid --------------------
# ``loose``: a Python source (arguments, Flask config), where ``seeds`` may
# also be a module, a Registry or units and paths may be ``os.PathLike``.

def _parse_url(value: Any, loose: bool) -> str:
    if not isinstance(value, str):
        raise Invalid("a database URL (a string)")
    return value


def _parse_engine(value: Any, loose: bool) -> str:
    if not isinstance(value, str) or value.count(":") != 1 or not all(
            part.strip() for part in value.split(":")):
        raise Invalid("MODULE:ATTR, the app's engine (e.g. app.core.db:engine)")
    return value


def _parse_path(value: Any, loose: bool) -> Any:
    if isinstance(value, str) or (loose and isinstance(value, os.PathLike)):
        return value
    raise Invalid("a path (a string)")


def _parse_seeds(value: Any, loose: bool) -> Any:
    if isinstance(value, str):
        return value
    if loose and not isinstance(value, (bool, int, float, bytes, Mapping)):
        return value  # a module, a Registry or units: discover() says if it is none of them
    raise Invalid("a dotted module path (a string)")


def _parse_contexts(value: Any, loose: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise Invalid("a list of context names (strings), or one comma-separated string")
    return tuple(item.strip() for item in items if item.strip())


_TIMEOUT = "a number of seconds (>= 0, or inf for no limit)"


def _parse_timeout(value: Any, loose: bool) -> float | None:
    """Seconds, or None for no limit (``inf``); booleans, NaN and negatives are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(_TIMEOUT)
    try:
        seconds = float(value)
    except ValueError:
        raise Invalid(_TIMEOUT) from None
    if math.isnan(seconds):
        raise Invalid(_TIMEOUT)
    if seconds < 0:
        raise Invalid(f"{_TIMEOUT}: a wait must be >= 0")
    return None if math.isinf(seconds) else seconds


# The longest name seedguard derives from ledger_table is its version table,
# "<name>_version", and it must fit in PostgreSQL's 63-character identifiers
# (MySQL allows 64). The history index, "ix_<name>_applied_at", is cut to 63
# by the sg0002 revision, so it never fails.
_LONGEST_LEDGER_TABLE = 63 - len("_version")
_PLAIN = "a plain SQL identifier (letters, digits, _; at most 63)"


def _parse_schema(value: Any, loose: bool) -> str:
    # Table and schema names end up in DDL and lock keys: accept only plain
    # identifiers rather than quoting arbitrary strings.
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise Invalid(_PLAIN)
    return value


def _parse_table(value: Any, loose: bool) -> str:
    _parse_schema(value, loose)
    if len(value) > _LONGEST_LEDGER_TABLE:
        raise Invalid(
            f"a plain SQL identifier of at most {_LONGEST_LEDGER_TABLE} characters, not "
            f"{len(value)}: its version table {value}_version must fit in 63"
        )
    return str(value)


def _parse_lock_mode(value: Any, loose: bool) -> LockMode:
    mode = _LOCK_MODES.get(value) if isinstance(value, str) else None
    if mode is None:
        raise Invalid("'session' or 'transaction' (for PgBouncer transaction pooling)")
    return mode


_LEASE = (f"a number of seconds from {MIN_LEASE:g} to {MAX_LEASE:g}: how long a holder "
          "whose host vanished keeps other appliers waiting")


def _parse_lease(value: Any, loose: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(_LEASE)
    try:
        seconds = float(value)
    except ValueError:
        raise Invalid(_LEASE) from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise Invalid(_LEASE)
    if seconds < MIN_LEASE:
        # Detection takes whole seconds of TCP keepalive probes and heartbeats
        # a fifth of the lease apart: below this, a busy but healthy holder
        # (a scheduler stall, a slow commit) would be taken for a vanished one.
        raise Invalid(f"{_LEASE}; a shorter lease would end healthy holders that are "
                       "merely slow to renew it")
    if seconds > MAX_LEASE:
        raise Invalid(f"{_LEASE}; a longer lease would leave appliers waiting on a "
                       "vanished holder for more than a day")
    return seconds




Parser = Callable[[Any, bool], Any]


@dataclass(frozen=True)
class Field:
    """One setting, as every front end knows it.

    :param name: the ``[tool.seedguard]`` key and the keyword of
        :func:`seedguard.config.resolve` (``url`` is its ``bind``, ``engine``
        its ``engine_spec``).
    :param type: the value's type once parsed, as documented.
    :param default: the value when no source gives one.
    :param parse: checks and converts a value (raises :class:`Invalid`).
    :param help: the command-line option's help text.
    :param summary: what the setting is, in a few words (pytest help, docs).
    :param apply: ``apply()``'s keyword for it: the name, ``"bind"`` for the
        database, or None when ``apply()`` does not take it.
    :param metavar: the option's metavar; None: no command-line option.
    :param flag: the option, when not ``--`` and the name with dashes.
    :param multiple: the option is repeatable and collects a tuple.
    :param number: the option's type: ``"seconds"`` (>= 0), ``"float"``, or
        None for text.
    :param pytest: the pytest plugin offers it (``--seedguard-<flag>`` and
        the ini key ``seedguard_<name>``).
    """

    name: str
    type: str
    default: Any
    parse: Parser
    help: str
    summary: str
    apply: str | None = None
    metavar: str | None = None
    flag: str | None = None
    multiple: bool = False
    number: Literal["seconds", "float"] | None = None
    pytest: bool = False

    @property
    def env(self) -> str:
        """The environment variable: ``SEEDGUARD_LOCK_TIMEOUT``."""
        return f"SEEDGUARD_{self.name.upper()}"

    @property
    def flask_key(self) -> str:
        """The Flask app's config key: ``SEEDGUARD_LOCK_TIMEOUT``."""
        return self.env

    @property
    def option(self) -> str | None:
        """The command-line option (``--lock-timeout``), or None when there is none."""
        if self.metavar is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def keyword(self) -> str:
        """How ``apply()`` and the other library calls spell it: ``lock_timeout=``."""
        return keyword(self.name)


FIELDS: tuple[Field, ...] = (
    Field("url", "str", None, _parse_url, apply="bind", metavar="URL",
          summary="the database URL",
          help="Database URL (else SEEDGUARD_URL, the Flask app, or [tool.seedguard] in "
               "pyproject.toml).", pytest=True),
    Field("engine", "str", None, _parse_engine, apply="bind", metavar="MODULE:ATTR",
          summary="your app's own Engine or AsyncEngine, as MODULE:ATTR (instead of url)",
          help="Run on your app's own Engine or AsyncEngine, imported from MODULE (e.g. "
               "app.core.db:engine; else SEEDGUARD_ENGINE or [tool.seedguard] engine); "
               "instead of --url."),
    Field("seeds", "str", None, _parse_seeds, apply="seeds", metavar="MODULE",
          summary="the dotted module or package that declares the units",
          help="Dotted module or package that declares the units.", pytest=True),
    Field("contexts", "tuple[str, ...]", (), _parse_contexts, apply="contexts", metavar="NAME",
          flag="--context", multiple=True, summary="the active contexts",
          help="Activate a context (repeatable).", pytest=True),
    Field("lock_timeout", "float | None", None, _parse_timeout, apply="lock_timeout",
          metavar="SECONDS", number="seconds",
          summary="seconds to wait for the locks, in all (none: no limit)",
          help="Give up waiting for a lock after this long (exit 4)."),
    Field("lock_path", "str | None", None, _parse_path, apply="lock_path", metavar="PATH",
          summary="the file lock's path",
          help="File lock path (default: derived from the URL)."),
    Field("alembic_config", "str | None", None, _parse_path, apply="alembic_config",
          metavar="INI", summary="your alembic.ini (or its folder)",
          help="The application's alembic.ini."),
    # A plain float, not a range, on the command line: the configuration's
    # message says what a lease may be and why (seedguard.settings._parse_lease).
    Field("lease", "float", DEFAULT_LEASE, _parse_lease, apply="lease", metavar="SECONDS",
          number="float",
          summary="how long a lock holder whose host vanished keeps other appliers waiting",
          help="How long a lock holder whose host vanished keeps others waiting "
               "(default 30)."),
    Field("lock_mode", "str", "session", _parse_lock_mode, apply="lock_mode",
          summary="'session', or 'transaction' (PgBouncer transaction pooling)",
          help="'session' or 'transaction'."),
    Field("ledger_table", "str", DEFAULT_LEDGER_TABLE, _parse_table,
          summary="the ledger's table name", help="The ledger's table name."),
    Field("ledger_schema", "str | None", None, _parse_schema,
          summary="the schema the ledger lives in", help="The schema the ledger lives in."),
)

BY_NAME: Mapping[str, Field] = {field.name: field for field in FIELDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def field(name: str) -> Field:
    """The field called ``name`` (a KeyError names it otherwise)."""
    return BY_NAME[name]


# -- how each front end spells a setting (seedguard.errors.SeedguardError.spelled) -----------


as_keyword = keyword
"""The library's words: ``lock_timeout=`` (what ``str(err)`` says)."""


def as_option(name: str) -> str:
    """The command line's words: ``--lock-timeout``, else the environment variable."""
    known = BY_NAME.get(name)
    if known is None:
        return keyword(name)
    return known.option or known.env


def as_flask_key(name: str) -> str:
    """A Flask app config's words: ``SEEDGUARD_LOCK_TIMEOUT``."""
    known = BY_NAME.get(name)
    return known.flask_key if known is not None else keyword(name)
