"""The :class:`Options` every command shares: the global options as given, and what
the command's output needs to know (its name, ``--json``, the URLs to redact).

The options themselves are declared in :mod:`seedguard.cli.common`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import click

from seedguard import config as _config
from seedguard import settings as _fields

# The settings apply() takes that the command line offers.
_APPLY_SETTINGS = tuple(f.name for f in _fields.FIELDS
                        if f.option is not None and f.apply == f.name)


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
        arguments = {name: self.given.get(name) for name in _APPLY_SETTINGS}
        arguments["contexts"] = self.contexts or None
        return arguments


pass_options = click.make_pass_decorator(Options)


class Declined(Exception):
    """The person at the terminal answered no: nothing was changed (exit 2)."""
