"""The global options (``--url``, ``--seeds``, ``--lock-timeout`` ...), derived from
:data:`seedguard.settings.FIELDS`, and the :class:`Options` every command shares.

They work before the command (on the group) and after it (on every command):
people type them after having typed the command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from seedguard import config as _config
from seedguard import settings as _fields
from seedguard.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

# The settings the command line offers, in the field list's order.
SETTINGS: tuple[_fields.Field, ...] = tuple(f for f in _fields.FIELDS if f.option is not None)


@dataclass
class Options:
    """The global options, shared by every command through the click context.

    ``given`` holds the settings given as options, by field name (only those
    given: the others come from the configuration's other sources).
    """

    given: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False
    verbose: bool = False
    command: str = ""
    json: bool = False
    # Added to the JSON error document: what a command did before it failed.
    partial: dict[str, Any] = field(default_factory=dict)
    # Database URLs resolved for this command, whose secrets no output may show.
    seen_urls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str | None:
        return self.given.get("url")

    @property
    def engine(self) -> str | None:
        return self.given.get("engine")

    @property
    def seeds(self) -> str | None:
        return self.given.get("seeds")

    @property
    def contexts(self) -> tuple[str, ...]:
        return tuple(self.given.get("contexts") or ())

    def start(self, command: str, *, as_json: bool = False) -> None:
        """A command begins: its name and output mode, for the error document."""
        self.command = command
        self.json = as_json

    def settings(self) -> _config.Settings:
        given = dict(self.given)
        given["contexts"] = self.contexts or None
        settings = _config.resolve(given.pop("url", None), engine_spec=given.pop("engine", None),
                                   **given)
        if settings.url:
            self.seen_urls.append(settings.url)
        elif settings.engine is not None:
            # --engine: the app's URL, password included, is as secret as a --url.
            self.seen_urls.append(settings.engine.url.render_as_string(hide_password=False))
        return settings

    def redact(self, text: str) -> str:
        """``text`` with the secrets of every URL this command was given hidden.

        The library hides them where it builds a message; this is the last
        line before the terminal, for a driver message or traceback that
        spelled one in a way nobody foresaw.
        """
        from seedguard.redact import redact

        return redact(text, self.url, os.environ.get("SEEDGUARD_URL"), *self.seen_urls)

    def bind(self) -> Any:
        """What ``apply()`` is given as the database: --url, or the --engine it names."""
        if self.engine is None:
            return self.url
        return self.settings().engine

    def apply_arguments(self) -> dict[str, Any]:
        """What ``seedguard.apply()`` takes of the global options."""
        arguments = {f.name: self.given.get(f.name) for f in SETTINGS if f.apply == f.name}
        arguments["contexts"] = self.contexts or None
        return arguments


pass_options = click.make_pass_decorator(Options)


class Declined(Exception):
    """The person at the terminal answered no: nothing was changed (exit 2)."""


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
        from seedguard.cli.logs import configure_logging

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
    from seedguard.cli.render import warn

    declared = api.contexts_declared(settings)
    for name in sorted(set(opts.contexts) - set(declared)):
        warn(opts, f"no unit declares context {name!r}; check the spelling (declared: "
             f"{', '.join(declared) or 'none'})")


def read_settings(opts: Options, *, units: bool = True) -> _config.Settings:
    """The command's settings, with a database (and, if ``units``, seeds) required."""
    settings = opts.settings()
    require_database(settings)
    if units:
        require_units(settings)
        warn_unknown_contexts(opts, settings)
    return settings
