"""The commands that write files: ``new`` (a seed module), ``init`` (``[tool.seedguard]``),
``dump`` (data seed files from tables)."""

from __future__ import annotations

import sys

import click

from seedguard import api
from seedguard.cli import render
from seedguard.cli.common import command_options, read_settings
from seedguard.cli.options import Options, pass_options


@click.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to write the module (default: the configured seeds package).")
@command_options
@pass_options
def new(opts: Options, name: str, directory: str | None) -> None:
    """Write a seed module template declaring one unit called NAME."""
    opts.start("new")
    written = api.new(name, directory=directory, seeds=opts.seeds)
    render.info(opts, f"wrote {written.path}; edit it, then run `seedguard upgrade`")


@click.command()
@command_options
@pass_options
def init(opts: Options) -> None:
    """Write a [tool.seedguard] section (url, seeds) to ./pyproject.toml."""
    opts.start("init")
    url, seeds = opts.url, opts.seeds
    if sys.stdin.isatty():
        if url is None:
            url = click.prompt("Database URL (no password: that goes in SEEDGUARD_URL)",
                               default="sqlite:///app.db")
        if seeds is None:
            seeds = click.prompt("Seeds module", default="seeds")
    written = api.init(url=url, seeds=seeds)
    verb = "created" if written.created else "added [tool.seedguard] to"
    render.info(opts, f"{verb} {written.path}")
    if written.password_removed:
        render.warn(opts, "the URL's password was not written to pyproject.toml (it is usually "
                    "committed); set SEEDGUARD_URL to the full URL, with the password, where "
                    "the commands run")


@click.command()
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
@command_options
@pass_options
def dump(opts: Options, tables: tuple[str, ...], keys: tuple[str, ...], refs: tuple[str, ...],
         fmt: str, out: str, where: str | None, as_json: bool) -> None:
    """Write TABLES as data seed files that data_dir applies back."""
    from seedguard import dump as _dump

    opts.start("dump", as_json=as_json)
    settings = read_settings(opts, units=False)
    quiet = as_json or opts.quiet
    progress = None if quiet else _dump.progress_printer(sys.stderr, tty=sys.stderr.isatty())
    result = _dump.dump(settings, list(tables), key=_dump.parse_keys(keys),
                        refs=_dump.parse_refs(refs), format=fmt, out=out, where=where,
                        progress=progress)
    if as_json:
        render.emit_json({"ok": True, "command": "dump", **result.as_dict()})
        return
    for warning in result.warnings:
        render.warn(opts, warning)
    for written in result.files:
        render.info(opts, f"wrote {written.path} ({written.rows} rows)")
    render.info(opts, f"apply them with: {result.data_dir_call()}")
