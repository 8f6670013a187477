"""The commands that apply: ``upgrade`` (one database or a fleet) and ``plan``
(rehearse, for review)."""

from __future__ import annotations

import sys
from typing import Any

import click

from seedguard import api
from seedguard.cli import fleet as _fleet
from seedguard.cli import render
from seedguard.cli.common import (
    command_options,
    require_database,
    require_units,
    warn_unknown_contexts,
)
from seedguard.cli.options import Options, pass_options
from seedguard.errors import ConfigError
from seedguard.events import Event, UnitFinished, subscribe
from seedguard.exits import EXIT_UNIT_FAILED
from seedguard.result import ApplyResult


@click.command()
@click.argument("target", required=False)
@click.option("--dry-run", is_flag=True, help="List what would run, in order; write nothing.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when an applied unit drifted.")
@click.option("--schema", is_flag=True,
              help="Run your `alembic upgrade head` first, under the same locks.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Apply only what this reviewed plan (`seedguard plan --out`) lists; "
              "exit 2 if it no longer matches.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@_fleet.fleet_options
@command_options
@pass_options
@click.pass_context
def upgrade(ctx: click.Context, opts: Options, target: str | None, dry_run: bool, strict: bool,
            schema: bool, plan_file: str | None, as_json: bool, schemas: str | None,
            urls_file: str | None, workers: int, shard: str | None) -> None:
    """Apply every pending unit (or TARGET and what it depends on), to one database or
    to each target of a fleet (--schemas, --urls-file)."""
    opts.start("upgrade", as_json=as_json)
    fleet = _fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        if plan_file is not None:
            # A plan is the rehearsal of one database: its digest says nothing of another.
            raise ConfigError("--plan applies what was reviewed on one database; it does not "
                              "go with --schemas or --urls-file (plan and upgrade each target "
                              "on its own)")
        _fleet.upgrade(ctx, opts, fleet, target=target, dry_run=dry_run, strict=strict,
                       schema=schema, as_json=as_json)
        return
    settings = opts.settings()
    require_database(settings)
    require_units(settings)
    warn_unknown_contexts(opts, settings)
    out = sys.stdout
    progress = None if (as_json or opts.quiet) else render.Progress(
        out, tty=out.isatty(), whole_lines=opts.verbose)
    # Units applied before a failure stay applied: the JSON error document lists them.
    finished: list[dict[str, Any]] = []
    opts.partial["applied"] = finished

    def listener(event: Event) -> None:
        if isinstance(event, UnitFinished):
            finished.append({**render.item(event.unit), "duration_ms": event.duration_ms})
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
            render.applied_before_failure(opts, finished)
        raise
    finally:
        unsubscribe()
    if progress is not None:
        progress.close()
    if as_json:
        render.emit_json(render.apply_document(result))
    else:
        render.applied(opts, result, dry_run=dry_run)


def _run_apply(opts: Options, **options: Any) -> ApplyResult:
    # One place that calls apply(), so options (e.g. alembic's --schema) are added here.
    return api.apply(opts.bind(), **opts.apply_arguments(), **options)


@click.command("plan")
@click.argument("target", required=False)
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the plan as JSON, for `seedguard upgrade --plan FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON document.")
@command_options
@pass_options
@click.pass_context
def plan_command(ctx: click.Context, opts: Options, target: str | None, out: str | None,
                 as_json: bool) -> None:
    """Rehearse the pending units (rolled back) and show what they would do.

    Exit 1 if a unit failed in the rehearsal.
    """
    opts.start("plan", as_json=as_json)
    settings = opts.settings()
    require_database(settings)
    require_units(settings)
    warn_unknown_contexts(opts, settings)
    rehearsal = api.plan(opts.url, **opts.apply_arguments(), target=target)
    if out is not None:
        rehearsal.save(out)
    if as_json:
        render.emit_json({"ok": rehearsal.ok, "command": "plan", **rehearsal.as_dict()})
    else:
        render.plan(opts, rehearsal, out)
    if not rehearsal.ok:
        ctx.exit(EXIT_UNIT_FAILED)
