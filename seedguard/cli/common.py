"""The global options (``--url``, ``--seeds``, ``--lock-timeout`` ...), derived from
:data:`seedguard.settings.FIELDS`, and what a command needs before it runs.

The options work before the command (on the group) and after it (on every
command): people type them after having typed the command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from seedguard import config as _config
from seedguard import settings as _fields
from seedguard.cli import render
from seedguard.cli.logs import configure_logging
from seedguard.cli.options import Options
from seedguard.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

# The settings the command line offers, in the field list's order.
SETTINGS: tuple[_fields.Field, ...] = tuple(f for f in _fields.FIELDS if f.option is not None)


def _click_type(setting: _fields.Field) -> Any:
    if setting.number == "seconds":
        return click.FloatRange(min=0)
    if setting.number == "float":
        return float
    return None


def _option_declarations(setting: _fields.Field) -> tuple[tuple[str, ...], dict[str, Any]]:
    assert setting.option is not None
    names: tuple[str, ...] = (setting.option,)
    if setting.option.lstrip("-").replace("-", "_") != setting.name:
        names += (setting.name,)  # --context: its value is the `contexts` setting
    kwargs: dict[str, Any] = {"metavar": setting.metavar, "help": setting.help}
    if setting.multiple:
        kwargs["multiple"] = True
    kind = _click_type(setting)
    if kind is not None:
        kwargs["type"] = kind
    return names, kwargs


# The global options: the settings, then the output's own two.
GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    *(_option_declarations(setting) for setting in SETTINGS),
    (("-q", "--quiet"), {"is_flag": True, "help": "Only errors (no progress, no warnings)."}),
    (("-v", "--verbose"), {"is_flag": True,
                           "help": "Log progress; tracebacks on errors."}),
]


def group_options(f: F) -> F:
    """The global options on the group (``seedguard --url U upgrade``)."""
    for args, kwargs in reversed(GLOBAL_OPTIONS):
        f = click.option(*args, **kwargs)(f)
    return f


def command_options(f: F) -> F:
    """The global options on a command (``seedguard upgrade --url U``), as if given before it."""
    for args, kwargs in reversed(GLOBAL_OPTIONS):
        f = click.option(*args, **kwargs, expose_value=False, callback=_late_option)(f)
    return f


def _late_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command: the same as before it."""
    if value is None or value is False or value == ():  # 0 (a lock timeout) counts
        return
    opts = ctx.find_object(Options)
    if opts is None:  # pragma: no cover - the group always creates it first
        return
    name = param.name or ""
    if name in ("quiet", "verbose"):
        setattr(opts, name, value)
        if opts.quiet and opts.verbose:
            raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
        configure_logging(ctx, verbose=opts.verbose, quiet=opts.quiet)
    elif _fields.field(name).multiple:
        opts.given[name] = (*opts.given.get(name, ()), *value)
    else:
        opts.given[name] = value


# -- what a command needs before it runs ---------------------------------------------------


def require_database(settings: _config.Settings) -> None:
    # The library's message lists apply() arguments and Flask; here, the options.
    if settings.url is None and settings.engine is None:
        raise ConfigError(
            "no database: give --url URL, set SEEDGUARD_URL, add url = \"...\" under "
            "[tool.seedguard] in pyproject.toml (`seedguard init`), or --engine MODULE:ATTR "
            "(your app's)"
        )


def require_units(settings: _config.Settings) -> None:
    from seedguard.registry import default_registry

    if settings.seeds is None and len(default_registry) == 0:
        raise ConfigError(
            "no seeds configured: give --seeds MODULE, set SEEDGUARD_SEEDS, or add "
            "`seeds = \"myapp.seeds\"` under [tool.seedguard] in pyproject.toml"
        )


def warn_unknown_contexts(opts: Options, settings: _config.Settings) -> None:
    """A --context that no unit declares selects nothing: most likely a typo."""
    if not opts.contexts:
        return
    from seedguard import api

    declared = api.contexts_declared(settings)
    for name in sorted(set(opts.contexts) - set(declared)):
        render.warn(opts, f"no unit declares context {name!r}; check the spelling (declared: "
             f"{', '.join(declared) or 'none'})")


def read_settings(opts: Options, *, units: bool = True) -> _config.Settings:
    """The command's settings, with a database (and, if ``units``, seeds) required."""
    settings = opts.settings()
    require_database(settings)
    if units:
        require_units(settings)
        warn_unknown_contexts(opts, settings)
    return settings
