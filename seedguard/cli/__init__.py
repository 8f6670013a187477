"""The ``seedguard`` command (and ``flask seedguard``): click commands over :mod:`seedguard.api`.

This package is the one place where errors become exit codes and where
anything is printed. Library calls return results; the commands render them
(:mod:`~seedguard.cli.render`) as text or, with ``--json``, as the documented
JSON documents.

- here: the group, which runs every command and turns its errors into one
  line (or a JSON document) and an exit code;
- :mod:`~seedguard.cli.common`: the global options, derived from the
  settings' field list (:mod:`seedguard.settings`), and what a command needs
  before it runs; :mod:`~seedguard.cli.options`: the :class:`Options` every
  command shares;
- :mod:`~seedguard.cli.apply` (``upgrade``, ``plan``),
  :mod:`~seedguard.cli.inspect` (``status``, ``check``, ``wait``,
  ``history``, ``diff``), :mod:`~seedguard.cli.admin` (``stamp``,
  ``forget``, ``resolve``), :mod:`~seedguard.cli.scaffold` (``new``,
  ``init``, ``dump``): each verb a thin wrapper over a library call;
- :mod:`~seedguard.cli.fleet`: the fleet options of ``upgrade``, ``status``
  and ``check``;
- :mod:`~seedguard.cli.render`: every line and document shown;
- :mod:`~seedguard.cli.logs`: ``-v`` and ``-q``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import click

from seedguard import config as _config
from seedguard.cli import admin, apply, inspect, render, scaffold
from seedguard.cli.common import group_options
from seedguard.cli.logs import configure_logging
from seedguard.cli.options import Options
from seedguard.cli.render import exit_code
from seedguard.errors import ConfigError

__all__ = ["cli", "exit_code", "main"]


class _Group(click.Group):
    """Turns every error a command raises into one line (or a JSON document) and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if _async_url(ctx):
                # One URL for the app and the command: with an async driver the
                # whole command runs on an event loop (async def units included).
                from seedguard import eventloop

                return eventloop.run_blocking(functools.partial(_invoke_on_loop, self, ctx))
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as err:
            # Click would turn a Ctrl-C into "Aborted!" and exit 1, which reads as
            # "a unit failed"; it gets its own code and the run's summary instead.
            _fail(ctx, err)
        except (SystemExit, GeneratorExit) as err:
            # click exits through its own Exit exception, so a SystemExit here
            # comes from user code (a unit or a seeds module calling sys.exit()):
            # exiting with its code would report success for a run that stopped.
            _fail(ctx, err)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        # `seedguard --json check` is `seedguard check --json`: output options
        # belong anywhere on the line, like the global ones (also under `flask
        # seedguard`, whose own options end before the verb).
        name, command, rest = super().resolve_command(ctx, args)
        if ctx.params.get("as_json") and command is not None:
            if not _has_json(command):
                having = sorted(n for n, c in self.commands.items() if _has_json(c))
                raise click.UsageError(
                    f"--json: `{name}` has no JSON output; drop --json, or use it with "
                    f"{', '.join(having)}", ctx)
            rest = ["--json", *rest]
        return name, command, rest

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(
            "Exit codes: 0 done or nothing to do; 1 a unit failed; 2 usage or configuration "
            "error; 3 `check` found pending, waiting, drifted or blocked units; 4 lock timeout; "
            "130 interrupted (Ctrl-C)."
        )


def _fail(ctx: click.Context, err: BaseException) -> None:
    render.failure(ctx.find_object(Options) or Options(), err)
    ctx.exit(exit_code(err))


def _has_json(command: click.Command) -> bool:
    return any("--json" in getattr(param, "opts", ()) for param in command.params)


def _async_url(ctx: click.Context) -> bool:
    """Whether the command's database URL, or the app's engine, has an async driver
    (then the command runs on a loop)."""
    from seedguard.eventloop import is_async_url

    url = ctx.params.get("url") or _late_value(ctx, "--url")
    if url is not None:
        return is_async_url(url)
    spec = ctx.params.get("engine") or _late_value(ctx, "--engine")
    engine = _spec_engine(spec)
    if engine is not None:
        return bool(engine.dialect.is_async)
    url = os.environ.get("SEEDGUARD_URL")
    if url is None and "flask.cli" not in sys.modules:
        try:
            settings = _config.resolve()  # SEEDGUARD_ENGINE, [tool.seedguard]
        except ConfigError:  # reported by the command that needs the configuration
            return False
        if settings.engine is not None:
            return bool(settings.engine.dialect.is_async)
        url = settings.url
    return is_async_url(url)


def _spec_engine(spec: str | None) -> Any:
    """The engine ``--engine`` names, or None (none given, or one the command reports)."""
    if not spec:
        return None
    try:
        return _config.resolve(engine_spec=spec).engine
    except ConfigError:
        return None


def _invoke_on_loop(group: click.Group, ctx: click.Context) -> Any:
    try:
        return click.Group.invoke(group, ctx)
    finally:
        # The app's AsyncEngine (--engine) holds connections of this loop,
        # which ends with the command: close them while it still runs.
        opts = ctx.find_object(Options)
        engine = _spec_engine(opts.engine if opts is not None else None)
        if engine is not None:
            engine.dispose()


def _late_value(ctx: click.Context, option: str) -> str | None:
    # `seedguard upgrade --url U`: the command's own options are parsed only
    # after the group decided how to run it, so look at its arguments.
    rest: list[str] = [*getattr(ctx, "_protected_args", ()), *ctx.args]
    for index, arg in enumerate(rest):
        if arg == option and index + 1 < len(rest):
            return rest[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@group_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (commands that have one), as their own --json.")
@click.version_option(package_name="seedguard", prog_name="seedguard")
@click.pass_context
def cli(ctx: click.Context, /, quiet: bool, verbose: bool, as_json: bool,
        **given: Any) -> None:
    """Exactly-once, retry-safe database seeding.

    The options below work before or after the command.
    """
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    ctx.obj = Options(given={name: value for name, value in given.items()
                             if value is not None and value != ()},
                      quiet=quiet, verbose=verbose, json=as_json)
    # Like `python -m` and `flask`: seeds modules in the current directory are importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    configure_logging(ctx, verbose=verbose, quiet=quiet)
    _flask_app_context(ctx)


def _flask_app_context(ctx: click.Context) -> None:
    """Under `flask seedguard`, run inside the app's context (like ``flask.cli.with_appcontext``).

    ``flask`` itself pushes one when it loads the app, but not every way of
    invoking the group does (``app.test_cli_runner()``, a group nested elsewhere).
    """
    if "flask.cli" not in sys.modules:  # never import Flask for the plain command
        return
    from flask import has_app_context
    from flask.cli import ScriptInfo

    info = ctx.find_object(ScriptInfo)
    if info is not None and not has_app_context():
        ctx.with_resource(info.load_app().app_context())


for _command in (apply.upgrade, apply.plan_command, inspect.status, inspect.check, inspect.wait,
                 inspect.history, inspect.diff, admin.stamp, admin.forget, admin.resolve,
                 admin.downgrade, scaffold.new, scaffold.init, scaffold.dump):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``seedguard``, ``python -m seedguard``).

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    cli.main(args=argv, prog_name="seedguard")
