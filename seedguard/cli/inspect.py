"""The commands that read: ``status``, ``check``, ``wait``, ``history``, ``diff``."""

from __future__ import annotations

import click

from seedguard import api
from seedguard.cli import fleet as _fleet
from seedguard.cli import render
from seedguard.cli.common import bind_option, command_options, read_settings
from seedguard.cli.options import Options, pass_options
from seedguard.exits import EXIT_CHECK


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@_fleet.fleet_options
@command_options
@pass_options
@click.pass_context
def status(ctx: click.Context, opts: Options, as_json: bool, bind_key: str | None,
           schemas: str | None, urls_file: str | None, workers: int,
           shard: str | None) -> None:
    """Show every unit's state and who holds the lock now."""
    opts.start("status", as_json=as_json)
    fleet = _fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        _fleet.no_bind_with_fleet(bind_key)
        _fleet.check(ctx, opts, fleet, as_json=as_json, full=True)
        return
    result = api.status(read_settings(opts), bind_key=bind_key)
    if as_json:
        render.emit_json({"ok": True, "command": "status", **result.as_dict()})
    else:
        render.status(opts, result)


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (status's, with `ok` the answer).")
@bind_option
@_fleet.fleet_options
@command_options
@pass_options
@click.pass_context
def check(ctx: click.Context, opts: Options, as_json: bool, bind_key: str | None,
          schemas: str | None, urls_file: str | None, workers: int,
          shard: str | None) -> None:
    """Exit 0 when nothing is pending, waiting, drifted or blocked; else exit 3 and say what."""
    opts.start("check", as_json=as_json)
    fleet = _fleet.Fleet(schemas, urls_file, workers, shard)
    if fleet.given:
        _fleet.no_bind_with_fleet(bind_key)
        _fleet.check(ctx, opts, fleet, as_json=as_json)
        return
    result = api.check(read_settings(opts), bind_key=bind_key)
    if as_json:
        render.emit_json(render.check_document(result, "check"))
    else:
        render.check(opts, result)
    if not result.ok:
        ctx.exit(EXIT_CHECK)


@click.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up after this many seconds (exit 4); default: wait as long as it takes.")
@bind_option
@command_options
@pass_options
def wait(opts: Options, timeout: float | None, bind_key: str | None) -> None:
    """Wait until nothing is pending or running; apply nothing (a readiness gate)."""
    opts.start("wait")
    from seedguard.readiness import wait as wait_ready

    result = wait_ready(read_settings(opts), timeout=timeout, bind_key=bind_key)
    render.info(opts, f"ready: {len(result.skipped)} unit(s) applied")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
def history(opts: Options, as_json: bool, bind_key: str | None) -> None:
    """Show the ledger, newest first (in a Flask app, every bind's)."""
    opts.start("history", as_json=as_json)
    result = api.history(read_settings(opts, units=False), bind_key=bind_key)
    if as_json:
        render.emit_json({"ok": True, "command": "history", **result.as_dict()})
    else:
        render.history(opts, result)


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
@click.pass_context
def diff(ctx: click.Context, opts: Options, name: str | None, as_json: bool,
         bind_key: str | None) -> None:
    """List seeded rows changed or deleted since they were seeded (exit 3 if any)."""
    from seedguard.diff import diff as _diff

    opts.start("diff", as_json=as_json)
    result = _diff(read_settings(opts), name=name, bind_key=bind_key)
    if as_json:
        render.emit_json(render.check_document(result, "diff"))
    else:
        render.diff(result)
    if not result.ok:
        ctx.exit(EXIT_CHECK)
