"""Declaring data seeds: ``data_seed()`` makes a :class:`SeedUnit` whose work is a DataSeed.

With ``version=None`` the unit is version 1 with ``on_change="rerun"``: its
checksum is a hash of the data (the file, read in blocks), so changing the
file re-applies the unit and an unchanged file costs one hash and no writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from seedguard.data.sources import FileSource, RowsSource, Source
from seedguard.data.spec import DataSeed
from seedguard.errors import DefinitionError
from seedguard.refs import RefSpec, parse_refs
from seedguard.unit import SeedUnit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from seedguard.upsert import TableLike, UpsertResult


def data_seed(
    name: str,
    *,
    table: TableLike,
    key: str | Sequence[str],
    rows: Iterable[Mapping[str, Any]] | None = None,
    path: str | os.PathLike[str] | None = None,
    refs: Mapping[str, RefSpec] | None = None,
    version: int | None = None,
    prune: bool = False,
    contexts: Iterable[str] | None = None,
    after: Iterable[str] = (),
    update: bool | Sequence[str] = True,
    encoding: str = "utf-8-sig",
    description: str | None = None,
    dialects: Iterable[str] | None = None,
) -> SeedUnit:
    """Declare (and register) a unit that upserts ``rows`` or the file at ``path`` by ``key``.

    :param name: the unit's name, as for :func:`seedguard.seed`.
    :param table: a Core ``Table``, an ORM model, or a table name (reflected
        when the unit runs).
    :param key: the column (or list of columns) that identifies a row; it
        needs a primary key or unique index.
    :param rows: the data as a list of dicts; give this or ``path``.
    :param path: a ``.csv`` file with a header row, a ``.json`` file holding a
        list of objects, or a ``.yaml`` / ``.yml`` file holding a list of
        mappings (extra ``seedguard[yaml]``); a relative path is resolved
        against the directory of the file that calls ``data_seed``.
    :param refs: columns whose values name another table's row by natural
        key, ``{"role_id": ("roles", "name")}``; the referenced row's key is
        written (the column the foreign key points at, else the target's
        primary key). The target is a table name, a Table or a model; a
        composite natural key is a tuple of columns, with a list value in the
        data or, as a third item, the data columns holding its parts. A value
        with no such row fails the unit (a DataError naming the file, line and
        column); the unit runs after the data seeds that fill the targets.
    :param version: None: re-apply whenever the data (or these settings) change;
        a number: re-apply only when it is raised (a data change is reported
        as drift).
    :param prune: True DELETES every row of the table whose key is not in the
        data.
    :param contexts: the contexts the unit runs in; None: always.
    :param after: names of units that must be applied before this one.
    :param update: True: update changed columns of existing rows; False: only
        insert missing rows; a list of column names: update only those.
    :param encoding: the file's text encoding (the default also strips a BOM).
    :param description: shown by ``status`` and ``history``; default: the
        table and key.
    :param dialects: the databases the unit applies to, as for
        :func:`seedguard.seed`; None: every database.
    """
    frame = sys._getframe(1)
    source = source_of(name, rows=rows, path=path, encoding=encoding,
                       caller=frame.f_code.co_filename)
    spec = DataSeed(name, table, key, source, update=update, prune=prune,
                    refs=parse_refs(name, refs))
    return declare(frame, spec, version=version, contexts=contexts, after=after,
                   description=description, dialects=dialects)



def source_of(name: str, *, rows: Iterable[Mapping[str, Any]] | None,
              path: str | os.PathLike[str] | None, encoding: str, caller: str) -> Source:
    """The records of data seed ``name``: exactly one of ``rows`` or the file at ``path``
    (relative to the directory of ``caller``, the file that declares it)."""
    if (rows is None) == (path is None):
        raise DefinitionError(f"data seed {name!r}: give exactly one of rows= or path=")
    if path is not None:
        return FileSource(resolve_path(path, caller), encoding)
    return RowsSource([dict(row) for row in rows or ()])


def declare(frame: FrameType, spec: DataSeed, *, version: int | None,
            contexts: Iterable[str] | None, after: Iterable[str], description: str | None,
            reads: Iterable[str] = (), dialects: Iterable[str] | None = None) -> SeedUnit:
    """Register the unit doing ``spec``, declared at ``frame`` (data_dir declares on its
    caller's behalf); the other parameters are data_seed's, ``reads`` the tables
    it reads besides its refs' targets."""
    caller = frame.f_code.co_filename
    name = spec.name
    if isinstance(after, str):
        after = [after]
    if isinstance(contexts, str):
        contexts = [contexts]

    def work(session: Session) -> UpsertResult:
        # Returned for a rehearsal (seedguard.plan), which reports its exact counts.
        return spec.run(session.connection(), dry_run=False)

    unit = SeedUnit(
        name=name,
        fn=work,
        version=1 if version is None else version,
        after=tuple(after),
        contexts=frozenset(contexts) if contexts is not None else None,
        on_change="rerun" if version is None else "warn",
        description=description or f"data seed of {spec.table_name} by {spec.key_text}",
        module=str(frame.f_globals.get("__name__", "")),
        origin=f"{caller}:{frame.f_lineno}",
        identity=f"{caller}:data_seed:{name}",
        checksum_fn=spec.checksum,
        preview=spec.preview,
        fills=frozenset({spec.table_name}),
        reads=frozenset({ref.target_name for ref in spec.refs} | set(reads)) - {spec.table_name},
        dialects=dialects,
    )
    from seedguard.registry import default_registry

    default_registry.add(unit)
    return unit


def resolve_path(path: str | os.PathLike[str], caller: str) -> Path:
    """``path``, relative to the directory of the file ``caller`` (else the working directory)."""
    result = Path(path)
    if result.is_absolute():
        return result
    base = Path(caller).parent if caller and not caller.startswith("<") else Path.cwd()
    return (base / result).resolve()
