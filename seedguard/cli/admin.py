"""The commands that change the ledger by hand: ``stamp``, ``forget``, ``resolve``, and
``downgrade``, which undoes a data seed's rows too."""

from __future__ import annotations

import sys

import click

from seedguard import api
from seedguard.cli import render
from seedguard.cli.common import bind_option, command_options, read_settings
from seedguard.cli.options import Declined, Options, pass_options


def _confirm(yes: bool, question: str) -> None:
    # Ask only a person at a terminal; a deploy script without --yes is not held up.
    # The question goes to stderr: under --json, stdout holds only the document.
    if not yes and sys.stdin.isatty() and not click.confirm(question, default=False, err=True):
        raise Declined("not confirmed; nothing changed")


@click.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), help="Version to record (default: "
              "the code's).")
@click.option("--all", "every", is_flag=True,
              help="Every selected pending unit (--context selects): adopt a database "
              "that holds the data already.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
def stamp(opts: Options, name: str | None, version: int | None, every: bool, yes: bool,
          as_json: bool, bind_key: str | None) -> None:
    """Record NAME (or, with --all, every pending unit) as applied without running it."""
    opts.start("stamp", as_json=as_json)
    if every == (name is not None):
        raise click.UsageError("give a unit NAME, or --all for every pending unit")
    if every and version is not None:
        raise click.UsageError("--version goes with a NAME, not with --all")
    if every:
        _stamp_all(opts, yes=yes, as_json=as_json, bind_key=bind_key)
        return
    assert name is not None
    settings = read_settings(opts, units=False)
    what = f"{name} v{version}" if version else name
    _confirm(yes, f"Record {what} as applied without running it?")
    change = api.stamp(settings, name, version=version, bind_key=bind_key)
    if as_json:
        render.emit_json(render.change_document("stamp", [change]))
    elif change.action == "unchanged":
        render.info(opts, f"{what} is already recorded as applied; nothing changed")
    else:
        render.info(opts, f"{change.action} {name} v{change.versions[0]}{render.on_bind(change)}")


def _stamp_all(opts: Options, *, yes: bool, as_json: bool, bind_key: str | None) -> None:
    from seedguard.adopt import stamp_all

    settings = read_settings(opts)
    _confirm(yes, "Record every pending unit as applied without running it?")
    changes = stamp_all(settings, bind_key=bind_key)
    if as_json:
        render.emit_json(render.change_document("stamp", changes))
    elif changes:
        render.info(opts, "stamped " + ", ".join(
            f"{c.name} v{c.versions[0]}{render.on_bind(c)}" for c in changes))
    else:
        render.info(opts, "nothing is pending; nothing changed")


@click.command()
@click.argument("name", required=False)
@click.option("--version", type=click.IntRange(min=1), help="Only this version (default: all).")
@click.option("--all", "every", is_flag=True,
              help="Every unit: empty the ledger (after resetting the tables).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
def forget(opts: Options, name: str | None, version: int | None, every: bool, yes: bool,
           as_json: bool, bind_key: str | None) -> None:
    """Remove NAME's ledger rows (or, with --all, every row) so it runs again."""
    opts.start("forget", as_json=as_json)
    if every == (name is not None):
        raise click.UsageError("give a unit NAME, or --all for every unit")
    if every and version is not None:
        raise click.UsageError("--version goes with a NAME, not with --all")
    settings = read_settings(opts, units=False)
    if every:
        _confirm(yes, "Remove every ledger row? Every unit will run again.")
        changes = api.forget_all(settings, bind_key=bind_key)
        if as_json:
            render.emit_json(render.change_document("forget", changes))
        elif changes:
            render.info(opts, "forgot " + ", ".join(
                f"{c.name} " + render.versions(c) + render.on_bind(c) for c in changes))
        else:
            render.info(opts, "the ledger is empty; nothing changed")
        return
    assert name is not None
    what = f"{name} v{version}" if version else f"every version of {name}"
    _confirm(yes, f"Remove the ledger rows of {what}? It will run again.")
    change = api.forget(settings, name, version=version, bind_key=bind_key)
    if as_json:
        render.emit_json(render.change_document("forget", [change]))
    elif change.changed:
        render.info(opts, f"forgot {name} " + render.versions(change) + render.on_bind(change))
    else:
        render.info(opts, f"nothing recorded for {what}; nothing changed")


@click.command()
@click.argument("name")
@click.option("--applied", "outcome", flag_value="applied",
              help="Its work is complete: record it applied.")
@click.option("--retry", "outcome", flag_value="retry", help="Remove its row: run it again.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
def resolve(opts: Options, name: str, outcome: str | None, yes: bool, as_json: bool,
            bind_key: str | None) -> None:
    """Settle NAME, a non-transactional unit interrupted mid-way (--applied or --retry)."""
    opts.start("resolve", as_json=as_json)
    if outcome is None:
        raise click.UsageError("give --applied (its work is complete) or --retry (run it again)")
    settings = read_settings(opts, units=False)
    _confirm(yes, f"Mark {name} as {'applied' if outcome == 'applied' else 'to run again'}?")
    change = api.resolve(settings, name, outcome=outcome, bind_key=bind_key)
    if as_json:
        render.emit_json(render.change_document("resolve", [change]))
        return
    render.info(opts, f"{name} {render.versions(change)}{render.on_bind(change)} " + (
        "recorded as applied" if outcome == "applied" else "will run again on the next upgrade"))


@click.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@bind_option
@command_options
@pass_options
def downgrade(opts: Options, name: str, yes: bool, as_json: bool,
              bind_key: str | None) -> None:
    """Undo data seed NAME's last application exactly (exit 3 if its rows changed since)."""
    from seedguard.downgrade import downgrade as _downgrade

    opts.start("downgrade", as_json=as_json)
    settings = read_settings(opts, units=False)
    _confirm(yes, f"Undo the rows {name} wrote? It will be pending again.")
    result = _downgrade(settings, name, bind_key=bind_key)
    if as_json:
        render.emit_json({"ok": True, "command": "downgrade", **result.as_dict()})
    elif result.action == "unchanged":
        render.info(opts, f"{name} is not applied; nothing changed")
    else:
        how = (f"its ledger row is back at the data before ({result.checksum})"
               if result.ledger == "reverted" else "it is pending again")
        render.info(opts, f"downgraded {name} v{result.version}: deleted {result.deleted}, "
                    f"restored {result.restored}, re-inserted {result.reinserted} row(s); {how}")
