"""``data_dir``: one data seed per data file of a directory, ordered by foreign keys and refs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from seedguard.data import DATA_SUFFIXES, DataSeed, declare, natural_key, resolve_path
from seedguard.data.sources import FileSource
from seedguard.errors import DefinitionError
from seedguard.refs import RefSpec, parse_refs
from seedguard.unit import SeedUnit


def data_dir(
    path: str | os.PathLike[str],
    *,
    keys: Mapping[str, str | Sequence[str]] | None = None,
    refs: Mapping[str, Mapping[str, RefSpec]] | None = None,
    prune: bool = False,
    contexts: Iterable[str] | None = None,
    after: Iterable[str] = (),
    metadata: Any = None,
    encoding: str = "utf-8-sig",
    dialects: Iterable[str] | None = None,
) -> list[SeedUnit]:
    """Declare one data seed per ``<table>.csv|json|yaml|yml`` file in ``path``.

    Each seed is named after its file's stem, which names the table it
    fills; it re-applies when its own file changes. Seeds run in the order
    of the tables' foreign keys and ``refs`` (a table after the tables it
    points at). Returns the units, in the order of the file names.

    ``path``: the directory; a relative path is resolved against the
    directory of the file that calls ``data_dir``. ``keys``: table -> natural
    key (a column or a list of them); a table not in it is matched by its one
    unique constraint besides the primary key, else by its primary key
    (several unique constraints: DefinitionError naming them). ``refs``:
    table -> that seed's ``refs=`` (see ``data_seed``). ``prune``: True
    DELETES, in every table, the rows whose key is not in its file.
    ``contexts``, ``after``: as for ``@seed``, for every seed. ``metadata``:
    the ``MetaData`` (or a declarative base) holding the tables; keys and
    foreign keys are then known at declaration, and a file that matches no
    table is a DefinitionError here. Without it the tables are reflected
    when the seeds run and only ``refs`` order them. ``encoding``: of the files.
    ``dialects``: as for ``@seed``, for every seed (None: every database).
    """
    frame = sys._getframe(1)
    folder = resolve_path(path, frame.f_code.co_filename)
    if not folder.is_dir():
        raise DefinitionError(f"data_dir: {folder} is not a directory")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    by_table: dict[str, Path] = {}
    for file in files:
        if file.stem in by_table:
            raise DefinitionError(
                f"data_dir {folder}: {by_table[file.stem].name} and {file.name} both fill "
                f"table {file.stem!r}; keep one")
        by_table[file.stem] = file
    keys = dict(keys or {})
    refs = dict(refs or {})
    for name, what in (("keys", keys), ("refs", refs)):
        unknown = sorted(set(what) - set(by_table))
        if unknown:
            raise DefinitionError(
                f"data_dir {folder}: {name}= names {', '.join(map(repr, unknown))}, which no "
                f"file there fills (files: {', '.join(p.name for p in files) or 'none'})")
    tables = _tables_of(metadata)
    if tables is not None:
        missing = sorted(t for t in by_table if t not in tables)
        if missing:
            raise DefinitionError(
                f"data_dir {folder}: {', '.join(by_table[t].name for t in missing)} "
                f"{'matches' if len(missing) == 1 else 'match'} no table of the metadata "
                f"(tables: {', '.join(sorted(tables)) or 'none'}); rename the file after "
                "its table, or move it out of the directory")
    if isinstance(after, str):
        after = [after]
    units = []
    for table, file in by_table.items():
        target: Any = table
        key = keys.get(table)
        reads: set[str] = set()
        if tables is not None:
            target = tables[table]
            if key is None:
                key = natural_key(target)
            reads = {fk.target_fullname.rpartition(".")[0] for fk in target.foreign_keys}
        spec = DataSeed(table, target, key, FileSource(file, encoding), update=True,
                        prune=prune, refs=parse_refs(table, refs.get(table)))
        units.append(declare(frame, spec, version=None, contexts=contexts, after=after,
                             description=None, reads=reads, dialects=dialects))
    return units


def _tables_of(metadata: Any) -> dict[str, Any] | None:
    """name -> Table of a MetaData or a declarative base (both table and schema.table)."""
    import sqlalchemy as sa

    if metadata is None:
        return None
    found = metadata if isinstance(metadata, sa.MetaData) else getattr(metadata, "metadata", None)
    if not isinstance(found, sa.MetaData):
        raise DefinitionError(
            f"data_dir: metadata must be a MetaData or a declarative base, not "
            f"{type(metadata).__name__}")
    tables: dict[str, Any] = {}
    for table in found.tables.values():
        tables.setdefault(table.name, table)
        tables[table.fullname] = table
    return tables
