"""``.sql`` units: SQL files run once, in their unit's transaction, re-run when they change.

A directory of ``*.sql`` files (a seeds package, or :func:`seedguard.sql_dir`)
becomes one unit per file stem. ``<stem>.<dialect>.sql`` is that unit's text
on that dialect and wins over ``<stem>.sql`` there. A unit is version 1 with
``on_change="rerun"``: its checksum hashes all its files, so editing one makes
the unit pending again (the ledger keeps the earlier row, as for data seeds).

Statements are split by sqlparse's tokenizer (extra ``seedguard[sql]``), which
knows quotes, PostgreSQL dollar quotes, ``--`` and ``/* */`` comments and
``BEGIN ... END`` bodies; MySQL client ``DELIMITER`` lines, which no server
understands, are read here on top of its tokens. Every file is parsed when its
unit is declared, so a file that does not parse is a DefinitionError before
anything is written. This module never imports the registry (the registry
calls :func:`declare_package` while it imports a seeds package).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from seedguard.checksum import data_checksum
from seedguard.errors import ConfigError, DataError, DefinitionError
from seedguard.unit import SeedUnit, validate_name

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect
    from sqlalchemy.orm import Session

DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")
"""The dialect suffixes a ``.sql`` file may carry (``roles.postgresql.sql``)."""

_DELIMITER = re.compile(r"[ \t]*delimiter[ \t]+(\S+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
# Statements that end or open the unit's transaction: the unit would not be
# atomic any more (the runner's verification catches it too; this says so
# before anything runs, with the line).
_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "START", "END"})
_BLOCK = 1 << 20


class _Registry(Protocol):
    def get(self, name: str) -> SeedUnit | None: ...

    def add(self, unit: SeedUnit) -> SeedUnit: ...


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL file: its text (without the delimiter) and first line."""

    text: str
    line: int


def parse_file(path: Path) -> tuple[Statement, ...]:
    """The statements of the SQL file at ``path``; DefinitionError naming the line if bad.

    Parsed once per version of the file (by modification time and size).
    """
    try:
        stat = path.stat()
    except OSError as err:
        raise DefinitionError(f"SQL file {path}: cannot read it ({err})") from err
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    found = _parsed.get(key)
    if found is None:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DefinitionError(
                f"SQL file {path}: not UTF-8 text ({err}); save it as UTF-8") from err
        except OSError as err:
            raise DefinitionError(f"SQL file {path}: cannot read it ({err})") from err
        found = split(text, where=str(path))
        _parsed[key] = found
    return found


_parsed: dict[tuple[str, int, int], tuple[Statement, ...]] = {}


def split(text: str, *, where: str = "<sql>") -> tuple[Statement, ...]:
    """Split SQL ``text`` into statements; ``where`` names it in errors.

    Raises DefinitionError for an unterminated quote, dollar quote or comment,
    a transaction-control statement, or text with no statement.
    """
    try:
        from sqlparse import engine
    except ImportError as err:
        raise ConfigError(
            f"{where}: running .sql files needs sqlparse: pip install 'seedguard[sql]'"
        ) from err

    protected = _protected(text, where)
    lexed = text
    if any(True for _ in _delimiter_lines(text, protected)):
        # DELIMITER is the mysql client's, so the file is MySQL's, where '$'
        # quotes nothing: a "DELIMITER $$" must not open a PostgreSQL dollar
        # quote. Masked at equal length, offsets still point into ``text``.
        lexed = text.replace("$", " ")
        protected = _protected(lexed, where)
    for start, end in _unprotected(lexed, protected):
        found = lexed.find("/*", start, end)
        if found >= 0:
            raise DefinitionError(
                f"{where}:{_line_at(text, found)}: unterminated /* comment; close it with */")

    statements: list[Statement] = []
    for delimiter, start, end in _segments(text, protected):
        if delimiter == ";":
            position = start
            stack = engine.FilterStack()  # type: ignore[no-untyped-call]
            for statement in stack.run(lexed[start:end]):  # type: ignore[no-untyped-call]
                one = _statement(text, position, statement)
                if one is not None:
                    statements.append(one)
                position += len(str(statement))
        else:
            statements.extend(_custom(text, start, end, delimiter, protected, where))
    if not statements:
        raise DefinitionError(f"{where}: holds no SQL statement; remove the file or add one")
    for statement in statements:
        first = statement.text.split(None, 1)[0].upper().rstrip(";")
        if first in _TRANSACTION_CONTROL and not _is_block(statement.text):
            raise DefinitionError(
                f"{where}:{statement.line}: {first} would end or open the unit's transaction; "
                "remove it: each .sql file runs in a transaction of its own already")
    return tuple(statements)


def _is_block(text: str) -> bool:
    # PostgreSQL and MySQL compound statements start with BEGIN too
    # ("BEGIN NOT ATOMIC ... END" on MariaDB); a bare BEGIN / BEGIN WORK does not.
    words = text.upper().split()
    return len(words) > 2 and words[0] == "BEGIN" and words[1] not in ("WORK", "TRANSACTION")


def _protected(text: str, where: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the quotes and comments of ``text``, by sqlparse's lexer."""
    from sqlparse import lexer
    from sqlparse import tokens as T

    protected: list[tuple[int, int]] = []
    offset = 0
    for ttype, value in lexer.tokenize(text):  # type: ignore[no-untyped-call]
        if ttype in T.Error:
            raise DefinitionError(
                f"{where}:{_line_at(text, offset)}: unterminated quote {value!r}; close it "
                "(or escape it by doubling)")
        if ttype in T.String or ttype in T.Comment or ttype is T.Literal \
                or (ttype in T.Name and value.startswith("`")):
            protected.append((offset, offset + len(value)))
        offset += len(value)
    return protected


def _statement(text: str, position: int, statement: Any) -> Statement | None:
    """The statement sqlparse found at ``position`` of ``text``, without the whitespace
    and comments around it and without its final semicolon; None if it is only those."""
    from sqlparse import tokens as T

    first: int | None = None
    end: int | None = None  # after the last token that is not a final ';'
    offset = position
    for token in statement.flatten():
        size = len(token.value)
        if not (token.ttype in T.Whitespace or token.ttype in T.Comment):
            if first is None:
                first = offset
            if not (token.ttype is T.Punctuation and token.value == ";"):
                end = offset + size
        offset += size
    if first is None or end is None:
        return None  # only whitespace, comments or a lone ';'
    return Statement(text[first:end].rstrip(), _line_at(text, first))


def _custom(text: str, start: int, end: int, delimiter: str,
            protected: Sequence[tuple[int, int]], where: str) -> Iterator[Statement]:
    """Statements of a ``DELIMITER`` block: split at ``delimiter`` outside quotes and comments."""
    cut = start
    for free_start, free_end in _unprotected(text, protected, start, end):
        at = text.find(delimiter, free_start, free_end)
        while at >= 0:
            body = _strip(text, cut, at, protected)
            if body is not None:
                yield Statement(text[body[0]:body[1]], _line_at(text, body[0]))
            cut = at + len(delimiter)
            at = text.find(delimiter, cut, free_end)
    body = _strip(text, cut, end, protected)
    if body is not None:
        raise DefinitionError(
            f"{where}:{_line_at(text, body[0])}: statement not ended by the delimiter "
            f"{delimiter!r} set by DELIMITER; end it with {delimiter}")


def _strip(text: str, start: int, end: int,
           protected: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """``(start, end)`` of the text between, without whitespace and comments around it."""
    comments = [(s, e) for s, e in protected if start <= s < end and _is_comment(text, s)]

    def skip_forward(i: int) -> int:
        while i < end:
            if text[i].isspace():
                i += 1
                continue
            span = next((e for s, e in comments if s == i), None)
            if span is None:
                return i
            i = span
        return i

    def skip_back(j: int) -> int:
        while j > start:
            if text[j - 1].isspace():
                j -= 1
                continue
            span = next((s for s, e in comments if e == j), None)
            if span is None:
                return j
            j = span
        return j

    first = skip_forward(start)
    if first >= end:
        return None
    return first, skip_back(end)


def _is_comment(text: str, at: int) -> bool:
    return text.startswith(("--", "/*", "#"), at)


def _delimiter_lines(text: str, protected: Sequence[tuple[int, int]]) -> Iterator[re.Match[str]]:
    """The ``DELIMITER x`` lines of ``text`` outside quotes and comments."""
    for match in _DELIMITER.finditer(text):
        at = match.start()
        if (at and text[at - 1] != "\n") or _inside(at, protected):
            continue  # not at the start of a line, or inside a quote or comment
        yield match


def _segments(text: str, protected: Sequence[tuple[int, int]]) -> Iterator[tuple[str, int, int]]:
    """``(delimiter, start, end)`` of the parts of ``text`` between ``DELIMITER`` lines."""
    delimiter = ";"
    start = 0
    for match in _delimiter_lines(text, protected):
        yield delimiter, start, match.start()
        delimiter = match.group(1)
        start = match.end()
    yield delimiter, start, len(text)


def _inside(at: int, protected: Sequence[tuple[int, int]]) -> bool:
    return any(s <= at < e for s, e in protected)


def _unprotected(text: str, protected: Sequence[tuple[int, int]], start: int = 0,
                 end: int | None = None) -> Iterator[tuple[int, int]]:
    """The spans of ``text[start:end]`` outside quotes and comments."""
    end = len(text) if end is None else end
    cursor = start
    for s, e in protected:
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            yield cursor, s
        cursor = max(cursor, e)
    if cursor < end:
        yield cursor, end


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# -- units ------------------------------------------------------------------------


class SqlUnit:
    """What a ``.sql`` unit does: pick its file for the dialect and run its statements."""

    def __init__(self, name: str, files: dict[str | None, Path],
                 dialects: frozenset[str] | None) -> None:
        self.name = name
        self.files = files  # dialect (None: any) -> file
        self.dialects = dialects

    def checksum(self) -> str:
        # Every variant counts: the unit is one unit on every database, and a
        # change to any of its files is a change to it.
        def chunks() -> Iterator[bytes]:
            yield b"sql\n"
            for dialect in sorted(self.files, key=lambda d: d or ""):
                path = self.files[dialect]
                yield f"{dialect or ''}\0{path.name}\0".encode()
                with path.open("rb") as handle:
                    while block := handle.read(_BLOCK):
                        yield block
        return data_checksum(chunks())

    def file_for(self, dialect: Dialect) -> Path:
        """The file this unit runs on ``dialect``."""
        names = _names_of(dialect)
        if self.dialects is not None and not self.dialects & set(names):
            raise DefinitionError(
                f"unit {self.name!r} is limited to {', '.join(sorted(self.dialects))} and this "
                f"database is {names[0]}; select it only there (contexts=) or widen dialects=")
        for name in names:
            if name in self.files:
                return self.files[name]
        if None in self.files:
            return self.files[None]
        have = ", ".join(self.files[d].name for d in sorted(self.files, key=lambda d: d or ""))
        raise DefinitionError(
            f"unit {self.name!r} has no SQL file for {names[0]} (it has {have}); add "
            f"{self.name}.sql or {self.name}.{names[-1]}.sql")

    def run(self, session: Session) -> None:
        from sqlalchemy.exc import DBAPIError

        conn: Connection = session.connection()
        path = self.file_for(conn.dialect)
        for statement in parse_file(path):
            try:
                # no_parameters: the text goes to the driver as it is, so a %
                # (LIKE 'a%') is not taken for a pymysql/psycopg placeholder.
                conn.exec_driver_sql(statement.text, execution_options={"no_parameters": True})
            except DBAPIError as err:
                raise DataError(
                    f"{path}:{statement.line}: statement failed: {_driver_error(err)}; "
                    "the whole file is rolled back: fix it and run again",
                    path=str(path), line=statement.line,
                ) from err


def _driver_error(err: Any) -> str:
    root = getattr(err, "orig", None) or err
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__


def _names_of(dialect: Dialect) -> list[str]:
    # The mysql dialect also talks to MariaDB (mysql+pymysql://): a .mariadb.sql
    # file wins there, else the .mysql.sql one.
    if dialect.name in ("mysql", "mariadb") and getattr(dialect, "is_mariadb", False):
        return ["mariadb", "mysql"]
    return [dialect.name]


def scan(folder: Path) -> dict[str, dict[str | None, Path]]:
    """unit name -> {dialect or None: file} of the ``*.sql`` files in ``folder``.

    DefinitionError for an unknown dialect suffix or a name a unit cannot have.
    """
    units: dict[str, dict[str | None, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".sql" or not path.is_file():
            continue
        stem = path.stem
        dialect: str | None = None
        if "." in stem:
            stem, _, dialect = stem.rpartition(".")
            if dialect not in DIALECTS:
                raise DefinitionError(
                    f"SQL file {path}: unknown dialect suffix {dialect!r}; use one of "
                    f"{', '.join(DIALECTS)} (a .sql unit's name cannot hold a dot)")
        validate_name(stem, what=f"unit name (from SQL file {path})")
        variants = units.setdefault(stem, {})
        if dialect in variants:
            raise DefinitionError(
                f"SQL files {variants[dialect].name} and {path.name} in {folder} are the "
                "same unit; keep one")
        variants[dialect] = path
    return units


def declare(folder: Path, registry: _Registry, *, module: str, origin: str,
            contexts: Iterable[str] | None = None, after: Iterable[str] = (),
            dialects: Iterable[str] | None = None,
            bind: str | None = None) -> list[SeedUnit]:
    """Declare (register in ``registry``) one unit per SQL file stem in ``folder``.

    Every file is parsed first, so a bad one is a DefinitionError before any
    unit of the folder is registered.
    """
    if isinstance(after, str):
        after = [after]
    if isinstance(contexts, str):
        contexts = [contexts]
    limited: frozenset[str] | None = None
    if dialects is not None:
        limited = frozenset([dialects] if isinstance(dialects, str) else dialects)
        unknown = sorted(limited - set(DIALECTS))
        if unknown:
            raise DefinitionError(
                f"SQL files in {folder}: unknown dialect(s) {', '.join(unknown)} in dialects=; "
                f"use {', '.join(DIALECTS)}")
    found = scan(folder)
    for variants in found.values():
        for path in variants.values():
            parse_file(path)
    units = []
    for name, variants in found.items():
        spec = SqlUnit(name, variants, limited)
        files = ", ".join(p.name for p in variants.values())
        unit = SeedUnit(
            name=name,
            fn=spec.run,
            version=1,
            after=tuple(after),
            contexts=frozenset(contexts) if contexts is not None else None,
            on_change="rerun",
            description=f"SQL file {files}",
            module=module,
            origin=f"{origin} ({folder / (name + '.sql')})",
            identity=f"{folder}:sql:{name}",
            checksum_fn=spec.checksum,
            dialects=limited,
            bind=bind,
        )
        existing = registry.get(name)
        if existing is not None and existing.identity == unit.identity \
                and existing.checksum_fn is not None \
                and getattr(existing.checksum_fn, "__self__", None) is not None \
                and _same(existing, unit):
            units.append(existing)  # unchanged: keep the registered unit (and its caches)
            continue
        units.append(registry.add(unit))
    return units


def _same(old: SeedUnit, new: SeedUnit) -> bool:
    before = getattr(old.checksum_fn, "__self__", None)
    after = getattr(new.checksum_fn, "__self__", None)
    return (isinstance(before, SqlUnit) and isinstance(after, SqlUnit)
            and before.files == after.files and before.dialects == after.dialects
            and old.after == new.after and old.contexts == new.contexts)


def declare_package(module: Any, registry: _Registry) -> None:
    """Declare the ``*.sql`` files of a seeds package's directories as its units."""
    for entry in getattr(module, "__path__", ()):
        folder = Path(entry)
        try:
            names = os.listdir(folder)
        except OSError:
            continue  # a zip or namespace entry without a directory: nothing to read
        if any(name.lower().endswith(".sql") for name in names):
            declare(folder, registry, module=module.__name__, origin=module.__name__)
