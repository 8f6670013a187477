"""The ``seedguard`` command (and ``flask seedguard``): click commands over :mod:`seedguard.api`.

This is the one place where errors become exit codes (``EXIT_*`` below) and
where anything is printed. Library calls return results; the commands render
them as text or, with ``--json``, as the documented JSON documents.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import click

from seedguard import api, cli_fleet
from seedguard import config as _config
from seedguard.errors import (
    ConfigError,
    DefinitionError,
    DowngradeRefused,
    LockTimeout,
    PlanStale,
    SeedFailed,
    SeedguardError,
    WaitTimeout,
)
from seedguard.events import Event, UnitFinished, UnitProgress, UnitStarted, subscribe
from seedguard.exits import (
    EXIT_CHECK,
    EXIT_INTERRUPTED,
    EXIT_LOCK_TIMEOUT,
    EXIT_OK,
    EXIT_UNIT_FAILED,
    EXIT_USAGE,
)
from seedguard.reports import LedgerChange, StatusResult, UnitStatus
from seedguard.result import ApplyResult

F = TypeVar("F", bound=Callable[..., Any])


class _Declined(Exception):
    """The person at the terminal answered no: nothing was changed."""


def exit_code(err: BaseException) -> int:
    """The documented exit code for ``err``."""
    if isinstance(err, (LockTimeout, WaitTimeout)):
        return EXIT_LOCK_TIMEOUT
    if isinstance(err, (ConfigError, DefinitionError, PlanStale, _Declined)):
        return EXIT_USAGE
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, DowngradeRefused):
        return EXIT_CHECK  # rows changed since, as `diff` reports them
    return EXIT_UNIT_FAILED


@dataclass
class Options:
    """The global options, shared by every command through the click context."""

    url: str | None = None
    engine: str | None = None
    seeds: str | None = None
    contexts: tuple[str, ...] = ()
    lock_timeout: float | None = None
    lock_path: str | None = None
    alembic_config: str | None = None
    lease: float | None = None
    quiet: bool = False
    verbose: bool = False
    command: str = ""
    json: bool = False
    # Added to the JSON error document: what a command did before it failed.
    partial: dict[str, Any] = field(default_factory=dict)
    # Database URLs resolved for this command, whose secrets no output may show.
    seen_urls: list[str] = field(default_factory=list)

    def settings(self) -> _config.Settings:
        settings = _config.resolve(
            self.url, seeds=self.seeds, contexts=self.contexts or None,
            lock_timeout=self.lock_timeout, lock_path=self.lock_path,
            alembic_config=self.alembic_config, lease=self.lease, engine_spec=self.engine,
        )
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
        return {"seeds": self.seeds, "contexts": self.contexts or None,
                "lock_timeout": self.lock_timeout, "lock_path": self.lock_path,
                "alembic_config": self.alembic_config, "lease": self.lease}


pass_options = click.make_pass_decorator(Options)


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


# Library messages name apply()'s keywords; on the command line the options.
_CLI_WORDS = ((re.compile(r"\braise lock_timeout\b"), "raise --lock-timeout"),
              (re.compile(r"\block_timeout=(?=\d)"), "--lock-timeout "),
              (re.compile(r"\blower lease\b"), "lower --lease"))


def _for_cli(message: str) -> str:
    for pattern, replacement in _CLI_WORDS:
        message = pattern.sub(replacement, message)
    return message


def _message(err: BaseException) -> str:
    if isinstance(err, _Declined):
        return str(err)
    if isinstance(err, SeedguardError):
        return _for_cli(str(err))
    if isinstance(err, KeyboardInterrupt):
        return ("interrupted (Ctrl-C): the unit that was running was rolled back; units "
                "applied before it stay applied; run the command again to resume")
    if isinstance(err, SystemExit):
        return (f"SystemExit({err.code!r}) raised while running the command (a unit or a "
                "seeds module called sys.exit()); the unit that was running was rolled "
                "back; units applied before it stay applied")
    return f"unexpected {type(err).__name__}: {err}"


def _fail(ctx: click.Context, err: BaseException) -> None:
    opts = ctx.find_object(Options) or Options()
    code = exit_code(err)
    known = isinstance(err, (SeedguardError, _Declined, KeyboardInterrupt))
    message = _message(err)
    if opts.json:
        kind = "Declined" if isinstance(err, _Declined) else type(err).__name__
        error: dict[str, Any] = {"type": kind, "message": message, "exit_code": code}
        unit = getattr(err, "unit", None)
        if isinstance(err, SeedFailed) and unit is not None:
            error["unit"] = getattr(unit, "name", None)
        if isinstance(err, LockTimeout):
            error["lock"] = err.lock
            error["holder"] = err.holder
        if isinstance(err, DowngradeRefused):
            error["unit"] = err.name
            error["rows"] = [row.as_dict() for row in err.rows]
        _emit_json({"ok": False, "command": opts.command, **opts.partial, "error": error})
    else:
        click.echo(opts.redact(f"error: {message}"), err=True)
    if opts.verbose:
        click.echo(opts.redact("".join(traceback.format_exception(err))), err=True, nl=False)
    elif not known and not opts.json:
        click.echo("(run with -v for the traceback)", err=True)
    ctx.exit(code)


def _emit_json(document: dict[str, Any]) -> None:
    click.echo(_redacted(json.dumps(document, indent=2, sort_keys=False, default=str)))


def _redacted(text: str) -> str:
    ctx = click.get_current_context(silent=True)
    opts = ctx.find_object(Options) if ctx is not None else None
    return (opts or Options()).redact(text)


def _start(opts: Options, command: str, *, as_json: bool = False) -> None:
    opts.command = command
    opts.json = as_json


def _info(opts: Options, message: str) -> None:
    if not opts.quiet:
        click.echo(opts.redact(message))


def _warn(opts: Options, message: str) -> None:
    if not opts.quiet:
        click.echo(opts.redact(f"warning: {message}"), err=True)


# The global options: on the group (`seedguard --url U upgrade`) and, through
# _late_option, on every command too (`seedguard upgrade --url U`), where
# people type them after having typed the command.
_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--url",), {"metavar": "URL", "help": "Database URL (else SEEDGUARD_URL, the Flask "
                  "app, or [tool.seedguard] in pyproject.toml)."}),
    (("--engine",), {"metavar": "MODULE:ATTR",
                     "help": "Run on your app's own Engine or AsyncEngine, imported from "
                     "MODULE (e.g. app.core.db:engine; else SEEDGUARD_ENGINE or [tool.seedguard] "
                     "engine); instead of --url."}),
    (("--seeds",), {"metavar": "MODULE",
                    "help": "Dotted module or package that declares the units."}),
    (("--context", "contexts"), {"multiple": True, "metavar": "NAME",
                                 "help": "Activate a context (repeatable)."}),
    (("--lock-timeout",), {"type": click.FloatRange(min=0), "metavar": "SECONDS",
                           "help": "Give up waiting for a lock after this long (exit 4)."}),
    (("--lock-path",), {"metavar": "PATH",
                        "help": "File lock path (default: derived from the URL)."}),
    (("--alembic-config",), {"metavar": "INI", "help": "The application's alembic.ini."}),
    (("--lease",), {"type": float, "metavar": "SECONDS",
                    "help": "How long a lock holder whose host vanished keeps others "
                            "waiting (default 30)."}),
    (("-q", "--quiet"), {"is_flag": True, "help": "Only errors (no progress, no warnings)."}),
    (("-v", "--verbose"), {"is_flag": True,
                           "help": "Log progress; tracebacks on errors."}),
]


def _group_options(f: F) -> F:
    for args, kwargs in reversed(_GLOBAL_OPTIONS):
        f = click.option(*args, **kwargs)(f)
    return f


def _command_options(f: F) -> F:
    for args, kwargs in reversed(_GLOBAL_OPTIONS):
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
    if name == "contexts":
        opts.contexts = (*opts.contexts, *value)
    else:
        setattr(opts, name, value)
    if name in ("quiet", "verbose"):
        if opts.quiet and opts.verbose:
            raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
        _configure_logging(ctx, verbose=opts.verbose, quiet=opts.quiet)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_group_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (commands that have one), as their own --json.")
@click.version_option(package_name="seedguard", prog_name="seedguard")
@click.pass_context
def cli(ctx: click.Context, url: str | None, engine: str | None, seeds: str | None,
        contexts: tuple[str, ...], lock_timeout: float | None, lock_path: str | None,
        alembic_config: str | None, lease: float | None, quiet: bool, verbose: bool,
        as_json: bool) -> None:
    """Exactly-once, retry-safe database seeding.

    The options below work before or after the command.
    """
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    ctx.obj = Options(url=url, engine=engine, seeds=seeds, contexts=contexts,
                      lock_timeout=lock_timeout, lock_path=lock_path,
                      alembic_config=alembic_config, lease=lease, quiet=quiet,
                      verbose=verbose, json=as_json)
    # Like `python -m` and `flask`: seeds modules in the current directory are importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    _configure_logging(ctx, verbose=verbose, quiet=quiet)
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


class _AlembicChatter(logging.Filter):
    """Drops alembic's INFO records ("Context impl PostgresqlImpl.", "Will assume
    transactional DDL.", "Running upgrade ...", "setup plugin ...") below -v.

    The user's env.py turns them on for the ``alembic`` command (``fileConfig``
    of alembic.ini, with the ``alembic`` logger at INFO); ``upgrade --schema``
    says itself which revisions it applied, and with nothing to do they are
    noise, as they are when seedguard creates its ledger with alembic and the
    app logs at INFO. A filter on the loggers that emit them, because
    ``fileConfig`` resets the levels and handlers of the loggers it configures
    and of their children, not a child's filters.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_ALEMBIC_CHATTER = _AlembicChatter()
_ALEMBIC_LOGGERS = ("alembic.runtime.migration", "alembic.runtime.plugins")


class _RedactingFormatter(logging.Formatter):
    """A log line (and its traceback) with the command's URL secrets hidden."""

    def __init__(self, ctx: click.Context, fmt: str) -> None:
        super().__init__(fmt)
        self._ctx = ctx

    def format(self, record: logging.LogRecord) -> str:
        opts = self._ctx.find_object(Options) or Options()
        return opts.redact(super().format(record))


def _configure_logging(ctx: click.Context, *, verbose: bool, quiet: bool = False) -> None:
    """With -v, log seedguard's INFO records to stderr for this command only; with -q,
    not even its warnings (Python prints those to stderr when no handler is set).
    Below -v, alembic's INFO records are dropped (:class:`_AlembicChatter`)."""
    for name in _ALEMBIC_LOGGERS:
        chatter = logging.getLogger(name)
        if verbose:
            chatter.removeFilter(_ALEMBIC_CHATTER)
        elif _ALEMBIC_CHATTER not in chatter.filters:
            chatter.addFilter(_ALEMBIC_CHATTER)
            ctx.call_on_close(functools.partial(chatter.removeFilter, _ALEMBIC_CHATTER))
    if not verbose and not quiet:
        return
    logger = logging.getLogger("seedguard")
    level = logger.level
    handler: logging.Handler | None = None
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RedactingFormatter(ctx, "%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.ERROR)

    def restore() -> None:
        # The group may run in a longer-lived process (flask's CLI runner, tests).
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)


def _require_database(settings: _config.Settings) -> None:
    # The library's message lists apply() arguments and Flask; here, the options.
    if settings.url is None and settings.engine is None:
        raise ConfigError(
            "no database: give --url URL, set SEEDGUARD_URL, add url = \"...\" under "
            "[tool.seedguard] in pyproject.toml (`seedguard init`), or --engine MODULE:ATTR "
            "(your app's)"
        )


def _warn_unknown_contexts(opts: Options, settings: _config.Settings) -> None:
    """A --context that no unit declares selects nothing: most likely a typo."""
    if not opts.contexts:
        return
    declared = api.contexts_declared(settings)
    for name in sorted(set(opts.contexts) - set(declared)):
        _warn(opts, f"no unit declares context {name!r}; check the spelling (declared: "
              f"{', '.join(declared) or 'none'})")


def _require_units(settings: _config.Settings) -> None:
    from seedguard.registry import default_registry

    if settings.seeds is None and len(default_registry) == 0:
        raise ConfigError(
            "no seeds configured: give --seeds MODULE, set SEEDGUARD_SEEDS, or add "
            "`seeds = \"myapp.seeds\"` under [tool.seedguard] in pyproject.toml"
        )


# -- upgrade -------------------------------------------------------------------------


class _Progress:
    """Per-unit lines as a run goes; on a terminal, a ticking line as a sign of life.

    ``whole_lines`` (with -v): log records go to stderr while a unit runs, so
    the unit's line is written complete at its start and its outcome on a line
    of its own; an open line would be cut in two by every log record.

    Not on a terminal (CI), a unit's line is written whole, in one write, when
    the unit ends: a CI log is stdout and stderr in one, and an open
    "applying ..." line was cut in two by every log line (alembic's INFO lines,
    the app's) written while the unit ran.
    """

    TICK_SECONDS = 0.5

    def __init__(self, out: IO[str], *, tty: bool, whole_lines: bool = False) -> None:
        self.out = out
        self.whole_lines = whole_lines
        self.tty = tty and not whole_lines
        self._lock = threading.Lock()
        self._unit = ""
        self._label = ""
        self._started = 0.0
        self._progress = ""
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, UnitStarted):
            self._unit = f"{event.unit.name} v{event.unit.version}"
            self._begin(f"applying {self._unit} ...")
        elif isinstance(event, UnitFinished):
            self._end(f"done {event.duration_ms} ms")
        elif isinstance(event, UnitProgress):
            total = f" / {event.total}" if event.total else ""
            percent = f" ({100 * event.done / event.total:.0f}%)" if event.total else ""
            with self._lock:
                self._progress = f"{event.done}{total}{percent}"

    def _begin(self, label: str) -> None:
        if not self.whole_lines and _app_logs_to_terminal():
            self.whole_lines, self.tty = True, False
        with self._lock:
            self._label, self._started, self._progress = label, time.monotonic(), ""
            if self.whole_lines or self.tty:
                self.out.write(label + ("\n" if self.whole_lines else " "))
                self.out.flush()
        if self.tty:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._tick, args=(self._stop,), daemon=True,
                                            name="seedguard-progress")
            self._thread.start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.TICK_SECONDS):
            with self._lock:
                elapsed = time.monotonic() - self._started
                detail = f"{self._progress}, " if self._progress else ""
                self.out.write(f"\r\x1b[K{self._label} {detail}{elapsed:.0f} s")
                self.out.flush()

    def _end(self, outcome: str) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._stop = self._thread = None
        with self._lock:
            if not self._label:
                return
            if self.tty:
                self.out.write(f"\r\x1b[K{self._label} ")
            if self.whole_lines:
                self.out.write(f"{self._unit}: {outcome}\n")
            elif self.tty:
                self.out.write(outcome + "\n")
            else:
                self.out.write(f"{self._label} {outcome}\n")
            self.out.flush()
            self._label = ""

    def close(self) -> None:
        """End a line left open by a unit that failed."""
        self._end("failed")


def _app_logs_to_terminal() -> bool:
    """Whether a logging handler writes to stdout or stderr, where progress lines go."""
    loggers = [logging.getLogger(), *(logger for logger in
                                      list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if stream is None or isinstance(handler, logging.FileHandler):
                continue
            if stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                return True
            try:
                if stream.fileno() in (1, 2):
                    return True
            except (AttributeError, OSError, ValueError):  # StringIO: a capture, not a terminal
                continue
    return False


def _item(unit: Any) -> dict[str, Any]:
    return {"name": unit.name, "version": unit.version}


def apply_document(result: ApplyResult) -> dict[str, Any]:
    """The ``upgrade --json`` document for a finished run."""
    return {
        "ok": True,
        "command": "upgrade",
        "dry_run": result.dry_run,
        "applied": [{**_item(a), "duration_ms": a.duration_ms} for a in result.applied],
        "skipped": [_item(u) for u in result.skipped],
        "pending": [_item(u) for u in result.pending],
        "drifted": [{**_item(d), "recorded": d.recorded, "current": d.current}
                    for d in result.drifted],
        "ahead": [_item(u) for u in result.ahead],
        # upgrade --schema: the user's alembic revisions applied first.
        "migrated": list(getattr(result, "migrated", [])),
        # Units whose requires_revision is not applied yet.
        "waiting": [{**_item(w), "revision": w.revision, "via": w.via}
                    for w in result.waiting],
        # --dry-run: what each pending data seed would write.
        "previews": {name: _preview_document(preview)
                     for name, preview in result.previews.items()},
    }


def _preview_counts(preview: Any) -> dict[str, int]:
    fields = ("inserted", "updated", "unchanged", "deleted")
    return {field: int(getattr(preview, field, 0)) for field in fields}


def _preview_document(preview: Any) -> dict[str, Any]:
    return {**_preview_counts(preview),
            "table_exists": not getattr(preview, "table_missing", False)}


def _describe_preview(preview: Any) -> str:
    counts = _preview_counts(preview)
    if getattr(preview, "table_missing", False):
        return f" (would insert {counts['inserted']}; its table does not exist yet)"
    return (f" (would insert {counts['inserted']}, update {counts['updated']}, "
            f"delete {counts['deleted']}; {counts['unchanged']} unchanged)")


@cli.command()
@click.argument("target", required=False)
@click.option("--dry-run", is_flag=True, help="List what would run, in order; write nothing.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when an applied unit drifted.")
@click.option("--schema", is_flag=True,
              help="Run your `alembic upgrade head` first, under the same locks.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Apply only what this reviewed plan (`seedguard plan --out`) lists; "
              "exit 2 if it no longer matches.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@cli_fleet.fleet_options
@_command_options
@pass_options
@click.pass_context
def upgrade(ctx: click.Context, opts: Options, target: str | None, dry_run: bool, strict: bool,
            schema: bool, plan_file: str | None, as_json: bool, schemas: str | None,
            urls_file: str | None, workers: int, shard: str | None) -> None:
    """Apply every pending unit (or TARGET and what it depends on), to one database or
    to each target of a fleet (--schemas, --urls-file)."""
    _start(opts, "upgrade", as_json=as_json)
    fleet = cli_fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        if plan_file is not None:
            # A plan is the rehearsal of one database: its digest says nothing of another.
            raise ConfigError("--plan applies what was reviewed on one database; it does not "
                              "go with --schemas or --urls-file (plan and upgrade each target "
                              "on its own)")
        cli_fleet.upgrade(ctx, opts, fleet, _fleet_output(), target=target, dry_run=dry_run,
                          strict=strict, schema=schema, as_json=as_json)
        return
    settings = opts.settings()
    _require_database(settings)
    _require_units(settings)
    _warn_unknown_contexts(opts, settings)
    out = sys.stdout
    progress = None if (as_json or opts.quiet) else _Progress(out, tty=out.isatty(),
                                                               whole_lines=opts.verbose)
    # Units applied before a failure stay applied: the JSON error document lists them.
    finished: list[dict[str, Any]] = []
    opts.partial["applied"] = finished

    def listener(event: Event) -> None:
        if isinstance(event, UnitFinished):
            finished.append({**_item(event.unit), "duration_ms": event.duration_ms})
        if progress is not None:
            progress(event)

    # A subscriber like any other (seedguard.events): what the CLI shows is
    # what a user's hook or the OpenTelemetry subscriber would see.
    unsubscribe = subscribe(listener)
    try:
        result = _run_apply(opts, target=target, dry_run=dry_run, strict=strict,
                            schema=schema, plan=plan_file)
    except BaseException:
        if progress is not None:
            progress.close()
        if not as_json and finished:
            # The error line follows; this says what the run did before it.
            total = sum(item["duration_ms"] for item in finished)
            _info(opts, f"applied {len(finished)} unit(s) in {total} ms before the failure; "
                  "they stay applied")
        raise
    finally:
        unsubscribe()
    if progress is not None:
        progress.close()
    if as_json:
        _emit_json(apply_document(result))
        return
    migrated = list(getattr(result, "migrated", []))
    if migrated:
        _info(opts, f"upgraded the schema: {', '.join(migrated)}")
    for drift in result.drifted:
        _warn(opts, drift.message())
    for unit in result.ahead:
        _warn(opts, f"unit {unit.name!r}: the ledger holds a version above the code's "
              f"v{unit.version}; not applied (is this code older than the database?)")
    for waiting in result.waiting:  # not an error, the schema comes first
        _info(opts, waiting.message())
    if dry_run:
        if not result.pending:
            _info(opts, "nothing to apply")
        else:
            _info(opts, f"would apply {len(result.pending)} unit(s), in order:")
            for unit in result.pending:
                preview = result.previews.get(unit.name)
                detail = _describe_preview(preview) if preview is not None else ""
                _info(opts, f"  {unit.name} v{unit.version}{detail}")
        return
    if result.applied:
        total = sum(a.duration_ms for a in result.applied)
        already = f"; {len(result.skipped)} already applied" if result.skipped else ""
        _info(opts, f"applied {len(result.applied)} unit(s) in {total} ms{already}")
    else:
        _info(opts, f"nothing to do: {len(result.skipped)} unit(s) already applied")


def _fleet_output() -> cli_fleet.Output:
    return cli_fleet.Output(emit_json=_emit_json, info=_info, message=_message,
                            exit_code=exit_code, apply_document=apply_document)


def _run_apply(opts: Options, **options: Any) -> ApplyResult:
    # One place that calls apply(), so options (e.g. alembic's --schema) are added here.
    return api.apply(opts.bind(), **opts.apply_arguments(), **options)


# -- plan: rehearse, for review ----------------------------------------------------------

# Statements shown per unit in the text summary; --json and --out have them all.
_PLAN_STATEMENTS = 3


@cli.command("plan")
@click.argument("target", required=False)
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the plan as JSON, for `seedguard upgrade --plan FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON document.")
@_command_options
@pass_options
@click.pass_context
def plan_command(ctx: click.Context, opts: Options, target: str | None, out: str | None,
                 as_json: bool) -> None:
    """Rehearse the pending units (rolled back) and show what they would do.

    Exit 1 if a unit failed in the rehearsal.
    """
    _start(opts, "plan", as_json=as_json)
    settings = opts.settings()
    _require_database(settings)
    _require_units(settings)
    _warn_unknown_contexts(opts, settings)
    rehearsal = api.plan(opts.url, **opts.apply_arguments(), target=target)
    if out is not None:
        rehearsal.save(out)
    if as_json:
        _emit_json({"ok": rehearsal.ok, "command": "plan", **rehearsal.as_dict()})
    else:
        _render_plan(opts, rehearsal, out)
    if not rehearsal.ok:
        ctx.exit(EXIT_UNIT_FAILED)


def _render_plan(opts: Options, rehearsal: Any, out: str | None) -> None:
    if not rehearsal.units:
        _info(opts, "nothing to apply")
    else:
        _info(opts, f"would apply {len(rehearsal.units)} unit(s), in order "
              "(rehearsed and rolled back):")
    for unit in rehearsal.units:
        if unit.not_rehearsed is not None:
            _info(opts, f"  {unit.name} v{unit.version}: not rehearsed: {unit.not_rehearsed}")
            continue
        state = f"FAILED: {unit.error}" if unit.failed else f"{unit.duration_ms} ms"
        _info(opts, f"  {unit.name} v{unit.version}: {state}")
        for table, counts in unit.rows.items():
            _info(opts, f"    {table}: {counts.inserted} inserted, {counts.updated} updated, "
                  f"{counts.deleted} deleted")
        for statement in unit.statements[:_PLAN_STATEMENTS]:
            _info(opts, f"    > {statement[:160]}")
        if len(unit.statements) > _PLAN_STATEMENTS:
            _info(opts, f"    ... and {len(unit.statements) - _PLAN_STATEMENTS} more "
                  "statement(s)")
    _info(opts, f"digest {rehearsal.digest}")
    if out is not None:
        _info(opts, f"wrote {out}; apply exactly this with `seedguard upgrade --plan {out}`")


# -- status, check, history --------------------------------------------------------------


def _describe(unit: UnitStatus) -> str:
    when = unit.applied_at.isoformat(timespec="seconds") if unit.applied_at else ""
    by = f" by {unit.applied_by}" if unit.applied_by else ""
    if unit.state == "applied":
        return f"applied {when}{by}"
    if unit.state == "waiting":
        return (f"waits for alembic revision {unit.waits_for}; run `alembic upgrade head` "
                "or `seedguard upgrade --schema`")
    if unit.state == "pending":
        if unit.changed is not None:
            return f"{unit.changed} changed since applied {when}; will re-apply"
        if unit.recorded_version is not None:
            return f"v{unit.recorded_version} applied {when}; v{unit.version} not yet"
        return "not applied yet"
    if unit.state == "drifted":
        return (f"applied {when}{by}, but its code or data changed since; raise its version "
                f"to re-apply it, or `seedguard stamp {unit.name}` to accept the change")
    if unit.state == "ahead":
        if unit.changed is not None:
            return (f"the database has newer data for this seed (applied {when}{by}); "
                    f"`seedguard forget {unit.name}` then upgrade to go back to this data")
        return f"the ledger has v{unit.recorded_version} (applied {when}), above the code"
    if unit.state == "blocked":
        return (f"interrupted mid-way (started {when}{by}); check its work, then "
                f"`seedguard resolve {unit.name} --applied` or `--retry`")
    if unit.state == "inapplicable":
        return (f"applies only to {', '.join(unit.dialects or ())}, not to this database; "
                "the units after it run without it")
    if unit.state == "inactive":
        contexts = ", ".join(unit.contexts or ())
        return (f"v{unit.recorded_version} applied {when}{by}; runs only in context(s) "
                f"{contexts}, none active")
    return f"v{unit.recorded_version} applied {when}{by}; no longer declared in the code"


def _render_status(opts: Options, result: StatusResult) -> None:
    note = "" if result.ledger_exists else " (not created yet)"
    if not result.ledger_current:
        note = (f" (schema revision {result.ledger_revision}, made by an older seedguard; "
                "the next upgrade, stamp or forget brings it up to date)")
    _info(opts, f"database {result.url}, ledger {result.ledger}{note}")
    labels = [unit.name if unit.version is None else f"{unit.name} v{unit.version}"
              for unit in result.units]
    width = max((len(label) for label in labels), default=0)
    for unit, label in zip(result.units, labels, strict=True):
        _info(opts, f"  {unit.state:<9} {label:<{width}}  {_describe(unit)}")
    if not result.units:
        _info(opts, "  no units selected")
    holders = []
    if result.file_lock_holder is not None:
        from seedguard.locks import describe_holder

        holders.append(f"file lock {result.file_lock} held by "
                       f"{describe_holder(result.file_lock_holder)}")
    if result.database_lock_holder:
        holders.append(f"database lock held by {result.database_lock_holder}")
    if result.holder is not None:
        holder = result.holder
        holders.append(f"holder pid {holder['pid']} on {holder['host']} since "
                       f"{holder['since']}, lease renewed {holder['heartbeat']}")
    _info(opts, "lock: " + ("; ".join(holders) if holders else "free"))


def _read_settings(opts: Options, *, units: bool = True) -> _config.Settings:
    settings = opts.settings()
    _require_database(settings)
    if units:
        _require_units(settings)
        _warn_unknown_contexts(opts, settings)
    return settings


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@cli_fleet.fleet_options
@_command_options
@pass_options
@click.pass_context
def status(ctx: click.Context, opts: Options, as_json: bool, schemas: str | None,
           urls_file: str | None, workers: int, shard: str | None) -> None:
    """Show every unit's state and who holds the lock now."""
    _start(opts, "status", as_json=as_json)
    fleet = cli_fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        cli_fleet.check(ctx, opts, fleet, _fleet_output(), as_json=as_json, full=True)
        return
    result = api.status(_read_settings(opts))
    if as_json:
        _emit_json({"ok": True, "command": "status", **result.as_dict()})
    else:
        _render_status(opts, result)


_PROBLEMS = ("pending", "waiting", "drifted", "blocked")


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (status's, with `ok` the answer).")
@cli_fleet.fleet_options
@_command_options
@pass_options
@click.pass_context
def check(ctx: click.Context, opts: Options, as_json: bool, schemas: str | None,
          urls_file: str | None, workers: int, shard: str | None) -> None:
    """Exit 0 when nothing is pending, waiting, drifted or blocked; else exit 3 and say what."""
    _start(opts, "check", as_json=as_json)
    fleet = cli_fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        cli_fleet.check(ctx, opts, fleet, _fleet_output(), as_json=as_json)
        return
    result = api.check(_read_settings(opts))
    if as_json:
        _emit_json({"ok": result.ok, "command": "check", **result.as_dict(),
                    "exit_code": EXIT_OK if result.ok else EXIT_CHECK})
    elif result.ok:
        _info(opts, f"ok: {len(result.by_state('applied'))} unit(s) applied, nothing pending "
              "or drifted")
    else:
        for unit in result.units:
            if unit.state in _PROBLEMS:
                click.echo(opts.redact(f"{unit.state}: {unit.name} v{unit.version}: "
                                       f"{_describe(unit)}"))
    if not result.ok:
        ctx.exit(EXIT_CHECK)


@cli.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up after this many seconds (exit 4); default: wait as long as it takes.")
@_command_options
@pass_options
def wait(opts: Options, timeout: float | None) -> None:
    """Wait until nothing is pending or running; apply nothing (a readiness gate)."""
    _start(opts, "wait")
    from seedguard.readiness import wait as wait_ready

    result = wait_ready(_read_settings(opts), timeout=timeout)
    _info(opts, f"ready: {len(result.skipped)} unit(s) applied")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def history(opts: Options, as_json: bool) -> None:
    """Show the ledger, newest first."""
    _start(opts, "history", as_json=as_json)
    result = api.history(_read_settings(opts, units=False))
    if as_json:
        _emit_json({"ok": True, "command": "history", **result.as_dict()})
        return
    if not result.rows:
        _info(opts, f"ledger {result.ledger} is empty or not created yet")
        return
    table = [("applied at (UTC)", "unit", "status", "took", "by")]
    for row in result.rows:
        # A stamped row was recorded without running: it has no duration.
        stamped = row.status == "applied" and row.duration_ms is None
        took = f"{row.duration_ms} ms" if row.duration_ms is not None else "-"
        table.append((row.applied_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
                      f"{row.name} v{row.version}", "stamped" if stamped else row.status,
                      took, row.applied_by or ""))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        cells = [cell.rjust(w) if i == 3 else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        _info(opts, "  ".join(cells).rstrip())


# -- diff ------------------------------------------------------------------------------------


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
@click.pass_context
def diff(ctx: click.Context, opts: Options, name: str | None, as_json: bool) -> None:
    """List seeded rows changed or deleted since they were seeded (exit 3 if any)."""
    from seedguard.diff import diff as _diff

    _start(opts, "diff", as_json=as_json)
    result = _diff(_read_settings(opts), name=name)
    if as_json:
        _emit_json({"ok": result.ok, "command": "diff", **result.as_dict(),
                    "exit_code": EXIT_OK if result.ok else EXIT_CHECK})
    else:
        for row in result.rows:
            where = f"{row.unit}: {row.table} {row.key!r}"
            if row.state == "deleted":
                click.echo(f"{where}: deleted")
            else:
                changes = ", ".join(f"{column} {seeded!r} -> {now!r}"
                                    for column, (seeded, now) in row.columns.items())
                click.echo(f"{where}: changed: {changes}")
    if not result.ok:
        ctx.exit(EXIT_CHECK)


# -- dump ------------------------------------------------------------------------------------


@cli.command()
@click.argument("tables", nargs=-1, required=True)
@click.option("--key", "keys", multiple=True, required=True, metavar="[TABLE=]COL[,COL]",
              help="The natural key: one for every table, or TABLE=COL for each.")
@click.option("--refs", "refs", multiple=True, metavar="[TABLE.]COL=TARGET.KEY",
              help="Write COL as the KEY of the TARGET row it points at (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "yaml"]), default="json",
              show_default=True, help="The files' format.")
@click.option("--out", default=".", show_default=True, metavar="DIR",
              help="The directory to write the files into.")
@click.option("--where", metavar="SQL", help="Only the rows meeting this SQL condition.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def dump(opts: Options, tables: tuple[str, ...], keys: tuple[str, ...], refs: tuple[str, ...],
         fmt: str, out: str, where: str | None, as_json: bool) -> None:
    """Write TABLES as data seed files that data_dir applies back."""
    from seedguard import dump as _dump

    _start(opts, "dump", as_json=as_json)
    settings = _read_settings(opts, units=False)
    quiet = as_json or opts.quiet
    progress = None if quiet else _dump.progress_printer(sys.stderr, tty=sys.stderr.isatty())
    result = _dump.dump(settings, list(tables), key=_dump.parse_keys(keys),
                        refs=_dump.parse_refs(refs), format=fmt, out=out, where=where,
                        progress=progress)
    if as_json:
        _emit_json({"ok": True, "command": "dump", **result.as_dict()})
        return
    for warning in result.warnings:
        _warn(opts, warning)
    for written in result.files:
        _info(opts, f"wrote {written.path} ({written.rows} rows)")
    _info(opts, f"apply them with: {result.data_dir_call()}")


# -- stamp, forget, resolve ------------------------------------------------------------------


def _confirm(yes: bool, question: str) -> None:
    # Ask only a person at a terminal; a deploy script without --yes is not held up.
    # The question goes to stderr: under --json, stdout holds only the document.
    if not yes and sys.stdin.isatty() and not click.confirm(question, default=False, err=True):
        raise _Declined("not confirmed; nothing changed")


def _change_document(command: str, changes: list[LedgerChange]) -> dict[str, Any]:
    return {"ok": True, "command": command, "changed": any(c.changed for c in changes),
            "changes": [change.as_dict() for change in changes]}


@cli.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), help="Version to record (default: "
              "the code's).")
@click.option("--all", "every", is_flag=True,
              help="Every selected pending unit (--context selects): adopt a database "
              "that holds the data already.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def stamp(opts: Options, name: str | None, version: int | None, every: bool, yes: bool,
          as_json: bool) -> None:
    """Record NAME (or, with --all, every pending unit) as applied without running it."""
    _start(opts, "stamp", as_json=as_json)
    if every == (name is not None):
        raise click.UsageError("give a unit NAME, or --all for every pending unit")
    if every and version is not None:
        raise click.UsageError("--version goes with a NAME, not with --all")
    if every:
        _stamp_all(opts, yes=yes, as_json=as_json)
        return
    assert name is not None
    settings = _read_settings(opts, units=False)
    what = f"{name} v{version}" if version else name
    _confirm(yes, f"Record {what} as applied without running it?")
    change = api.stamp(settings, name, version=version)
    if as_json:
        _emit_json(_change_document("stamp", [change]))
    elif change.action == "unchanged":
        _info(opts, f"{what} is already recorded as applied; nothing changed")
    else:
        _info(opts, f"{change.action} {name} v{change.versions[0]}")


def _stamp_all(opts: Options, *, yes: bool, as_json: bool) -> None:
    from seedguard.adopt import stamp_all

    settings = _read_settings(opts)
    _confirm(yes, "Record every pending unit as applied without running it?")
    changes = stamp_all(settings)
    if as_json:
        _emit_json(_change_document("stamp", changes))
    elif changes:
        _info(opts, "stamped " + ", ".join(f"{c.name} v{c.versions[0]}" for c in changes))
    else:
        _info(opts, "nothing is pending; nothing changed")


@cli.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), help="Only this version (default: all).")
@click.option("--all", "every", is_flag=True,
              help="Every unit: empty the ledger (after resetting the tables).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def forget(opts: Options, name: str | None, version: int | None, every: bool, yes: bool,
           as_json: bool) -> None:
    """Remove NAME's ledger rows (or, with --all, every row) so it runs again."""
    _start(opts, "forget", as_json=as_json)
    if every == (name is not None):
        raise click.UsageError("give a unit NAME, or --all for every unit")
    if every and version is not None:
        raise click.UsageError("--version goes with a NAME, not with --all")
    settings = _read_settings(opts, units=False)
    if every:
        _confirm(yes, "Remove every ledger row? Every unit will run again.")
        changes = api.forget_all(settings)
        if as_json:
            _emit_json(_change_document("forget", changes))
        elif changes:
            _info(opts, "forgot " + ", ".join(
                f"{c.name} " + ", ".join(f"v{v}" for v in c.versions) for c in changes))
        else:
            _info(opts, "the ledger is empty; nothing changed")
        return
    assert name is not None
    what = f"{name} v{version}" if version else f"every version of {name}"
    _confirm(yes, f"Remove the ledger rows of {what}? It will run again.")
    change = api.forget(settings, name, version=version)
    if as_json:
        _emit_json(_change_document("forget", [change]))
    elif change.changed:
        _info(opts, f"forgot {name} " + ", ".join(f"v{v}" for v in change.versions))
    else:
        _info(opts, f"nothing recorded for {what}; nothing changed")


@cli.command()
@click.argument("name")
@click.option("--applied", "outcome", flag_value="applied",
              help="Its work is complete: record it applied.")
@click.option("--retry", "outcome", flag_value="retry", help="Remove its row: run it again.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def resolve(opts: Options, name: str, outcome: str | None, yes: bool, as_json: bool) -> None:
    """Settle NAME, a non-transactional unit interrupted mid-way (--applied or --retry)."""
    _start(opts, "resolve", as_json=as_json)
    if outcome is None:
        raise click.UsageError("give --applied (its work is complete) or --retry (run it again)")
    settings = _read_settings(opts, units=False)
    _confirm(yes, f"Mark {name} as {'applied' if outcome == 'applied' else 'to run again'}?")
    change = api.resolve(settings, name, outcome=outcome)
    if as_json:
        _emit_json(_change_document("resolve", [change]))
        return
    versions = ", ".join(f"v{v}" for v in change.versions)
    _info(opts, f"{name} {versions} " + ("recorded as applied" if outcome == "applied"
                                          else "will run again on the next upgrade"))


# -- downgrade -------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_command_options
@pass_options
def downgrade(opts: Options, name: str, yes: bool, as_json: bool) -> None:
    """Undo data seed NAME's last application exactly (exit 3 if its rows changed since)."""
    from seedguard.downgrade import downgrade as _downgrade

    _start(opts, "downgrade", as_json=as_json)
    settings = _read_settings(opts, units=False)
    _confirm(yes, f"Undo the rows {name} wrote? It will be pending again.")
    result = _downgrade(settings, name)
    if as_json:
        _emit_json({"ok": True, "command": "downgrade", **result.as_dict()})
    elif result.action == "unchanged":
        _info(opts, f"{name} is not applied; nothing changed")
    else:
        how = (f"its ledger row is back at the data before ({result.checksum})"
               if result.ledger == "reverted" else "it is pending again")
        _info(opts, f"downgraded {name} v{result.version}: deleted {result.deleted}, "
              f"restored {result.restored}, re-inserted {result.reinserted} row(s); {how}")


# -- new, init -------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to write the module (default: the configured seeds package).")
@_command_options
@pass_options
def new(opts: Options, name: str, directory: str | None) -> None:
    """Write a seed module template declaring one unit called NAME."""
    _start(opts, "new")
    written = api.new(name, directory=directory, seeds=opts.seeds)
    _info(opts, f"wrote {written.path}; edit it, then run `seedguard upgrade`")


@cli.command()
@_command_options
@pass_options
def init(opts: Options) -> None:
    """Write a [tool.seedguard] section (url, seeds) to ./pyproject.toml."""
    _start(opts, "init")
    url, seeds = opts.url, opts.seeds
    if sys.stdin.isatty():
        if url is None:
            url = click.prompt("Database URL (no password: that goes in SEEDGUARD_URL)",
                               default="sqlite:///app.db")
        if seeds is None:
            seeds = click.prompt("Seeds module", default="seeds")
    written = api.init(url=url, seeds=seeds)
    verb = "created" if written.created else "added [tool.seedguard] to"
    _info(opts, f"{verb} {written.path}")
    if written.password_removed:
        _warn(opts, "the URL's password was not written to pyproject.toml (it is usually "
              "committed); set SEEDGUARD_URL to the full URL, with the password, where the "
              "commands run")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``seedguard``, ``python -m seedguard``)."""
    cli.main(args=argv, prog_name="seedguard")
