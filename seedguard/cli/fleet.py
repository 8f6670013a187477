"""``upgrade``, ``status`` and ``check`` over a fleet: ``--schemas``, ``--urls-file``,
``--workers``, ``--shard``.

The fleet is every schema (PostgreSQL) or database (MySQL/MariaDB) of the
``--url`` server whose name is ``LIKE`` the pattern, plus every URL of the
file; ``--shard I/N`` keeps this runner's share of it. The work is
:func:`seedguard.fleet.apply_each` / ``check_each`` / ``status_each``; this
module only finds the targets and hands the outcome to
:mod:`seedguard.cli.render`: a progress bar on a terminal, one line per failed
target, or with ``--json`` one document listing every target.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from seedguard.cli import render
from seedguard.cli.options import Options
from seedguard.errors import ConfigError
from seedguard.exits import EXIT_CHECK, EXIT_OK, EXIT_UNIT_FAILED

if TYPE_CHECKING:
    from seedguard.fleet import Target

F = TypeVar("F", bound=Callable[..., Any])

FLEET_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--schemas",), {"metavar": "PATTERN",
                      "help": "Every schema (PostgreSQL) or database (MySQL/MariaDB) of the "
                      "--url server whose name is LIKE PATTERN, e.g. 'tenant_%'."}),
    (("--urls-file",), {"metavar": "FILE", "type": click.Path(dir_okay=False),
                        "help": "Targets: one database URL a line (# starts a comment)."}),
    (("--workers",), {"type": click.IntRange(min=1), "default": 4, "show_default": True,
                      "help": "With a fleet: how many targets at once."}),
    (("--shard",), {"metavar": "I/N",
                    "help": "With a fleet: only this runner's share, I of N (I from 0, as "
                    "JOB_COMPLETION_INDEX), split by a stable hash of each target's name."}),
]


def fleet_options(f: F) -> F:
    for args, kwargs in reversed(FLEET_OPTIONS):
        f = click.option(*args, **kwargs)(f)
    return f


@dataclass(frozen=True)
class Fleet:
    """The fleet options of one command."""

    schemas: str | None
    urls_file: str | None
    workers: int
    shard: str | None

    def __post_init__(self) -> None:
        if self.shard is not None and not self.given:
            raise ConfigError("--shard splits a fleet: give --schemas PATTERN or --urls-file "
                              "FILE too")

    @property
    def given(self) -> bool:
        """Whether the command runs over a fleet (else it runs on one database as ever)."""
        return self.schemas is not None or self.urls_file is not None

    def targets(self, opts: Options) -> list[Target]:
        """The targets, in a stable order, limited to this runner's shard."""
        from seedguard import config as _config
        from seedguard.fleet import labelled_targets, shard
        from seedguard.schema import Schema, schemas_like

        targets: list[Target] = []
        if self.schemas is not None:
            settings = _config.resolve(opts.url)
            if settings.url is None and settings.engine is None:
                raise ConfigError("--schemas lists the schemas of one server: give --url URL "
                                  "(or SEEDGUARD_URL) for it")
            from seedguard.connect import engine_for

            with engine_for(settings) as engine:
                names = schemas_like(engine, self.schemas)
            server: Any = settings.engine if settings.engine is not None else settings.url
            targets += [Schema(server, name) for name in names]
        if self.urls_file is not None:
            targets += read_urls(self.urls_file)
        if self.shard is not None:
            index, count = parse_shard(self.shard)
            labelled = labelled_targets(targets)
            kept = set(shard([label for label, _ in labelled], index, count))
            targets = [target for label, target in labelled if label in kept]
        return targets


def read_urls(path: str) -> list[str]:
    """The URLs of ``path``: one a line, blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read --urls-file {path}: {err.strerror or err}") from err
    urls = []
    for line in text.splitlines():
        # A comment is a whole line, or follows whitespace: "#" inside a URL
        # (percent-encoding aside) stays part of it.
        line = re.split(r"\s#", line.strip(), maxsplit=1)[0].strip()
        if line and not line.startswith("#"):
            urls.append(line)
    return urls


def parse_shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    try:
        if not slash:
            raise ValueError(text)
        return int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4 (I from 0 to "
                          "N-1)") from None


def upgrade(ctx: click.Context, opts: Options, fleet: Fleet, *, target: str | None,
            dry_run: bool, strict: bool, schema: bool, as_json: bool) -> None:
    """``seedguard upgrade`` over a fleet: exit 1 if any target failed."""
    from seedguard.fleet import apply_each

    targets = fleet.targets(opts)
    bar = render.Bar(len(targets), show=render.show_bar(opts, as_json), what="targets")
    failures: list[str] = []

    def on_target(label: str, outcome: Any) -> None:
        failed = isinstance(outcome, BaseException)
        if failed and not as_json:
            failures.append(f"failed: {label}: {render.one_line(outcome)}")
        bar.step(failed)

    options = opts.apply_arguments()
    options.pop("lock_path")  # every target has its own
    try:
        result = apply_each(targets, workers=fleet.workers, on_target=on_target,
                            target=target, dry_run=dry_run, strict=strict, schema=schema,
                            **options)
    finally:
        bar.close()
    code = EXIT_OK if result.ok else EXIT_UNIT_FAILED
    if as_json:
        render.emit_json({"ok": result.ok, "command": "upgrade",
                          "targets": render.fleet_apply_targets(result), "exit_code": code})
    else:
        render.fleet_applied(opts, result, targets=len(targets), dry_run=dry_run,
                             failures=failures)
    if code:
        ctx.exit(code)


def check(ctx: click.Context, opts: Options, fleet: Fleet, *, as_json: bool,
          full: bool = False) -> None:
    """``seedguard check`` (``full``: ``status``) over a fleet.

    check: exit 1 if a target could not be read, else 3 if any is not up to
    date; status: exit 1 if a target could not be read.
    """
    from seedguard.fleet import check_each, status_each

    targets = fleet.targets(opts)
    bar = render.Bar(len(targets), show=render.show_bar(opts, as_json), what="targets")

    def on_target(label: str, outcome: Any) -> None:
        bar.step(isinstance(outcome, BaseException))

    read = status_each if full else check_each
    try:
        found = read(targets, workers=fleet.workers, seeds=opts.seeds,
                     contexts=opts.contexts or None, on_target=on_target)
    finally:
        bar.close()
    command = "status" if full else "check"
    if found.failed:
        code = EXIT_UNIT_FAILED
    elif found.pending and not full:
        code = EXIT_CHECK
    else:
        code = EXIT_OK
    if as_json:
        render.emit_json({"ok": found.ok if not full else not found.failed, "command": command,
                          "targets": render.fleet_check_targets(found), "exit_code": code})
    else:
        render.fleet_checked(opts, found, targets=len(targets), full=full)
    if code:
        ctx.exit(code)
