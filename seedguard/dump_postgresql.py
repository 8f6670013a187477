"""``seedguard dump`` on PostgreSQL: the server writes each row as a JSON object, ``COPY``
streams them.

``COPY (SELECT row_to_json(r) FROM (<the dump's query>) r) TO STDOUT`` returns
one JSON object a line, in the query's key order, through psycopg's COPY
protocol; Python only splits the lines and undoes COPY's text escaping, so a
dump costs about what the database's own export costs (bench/dump.py). The
columns are converted in SQL to what :mod:`seedguard.data` reads back, as
:func:`seedguard.dump._converter_for` does in Python: ``numeric`` as text
(a JSON number would be read as a float), ``bytea`` as hex. Dates and times
come out of ``to_json`` in ISO 8601, as ``isoformat()`` writes them. A column
of any other type (arrays, intervals, ranges...) leaves the dump to the
streamed path, which knows them.

Only psycopg (3) has the COPY call used here; with another driver the rows
are streamed too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from seedguard import dump
from seedguard.dump import Exporter

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from seedguard.dump import _Plan

# COPY's text format escapes these in a value (PostgreSQL's CopyAttributeOutText).
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return _ESCAPES.get(char, char)


class PostgresExporter(Exporter):
    dialects = ("postgresql",)

    def json_records(self, conn: Connection, plan: _Plan) -> Iterator[list[str]] | None:
        if conn.dialect.driver != "psycopg":
            return None
        sql = _copy_sql(conn, plan)
        if sql is None:
            return None
        return _records(conn, sql)


def _copy_sql(conn: Connection, plan: _Plan) -> str | None:
    """The COPY statement, or None if a column has a type this path does not convert."""
    import sqlalchemy as sa

    columns = []
    for column in plan.query.selected_columns:
        kind = column.type
        if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float) and kind.asdecimal:
            value: Any = sa.cast(column, sa.Text)
        elif isinstance(kind, sa.LargeBinary):
            value = sa.func.encode(column, "hex")
        elif isinstance(kind, (sa.String, sa.Integer, sa.Boolean, sa.Float, sa.Numeric,
                               sa.Date, sa.DateTime, sa.Time, sa.JSON, sa.Uuid)):
            value = column
        else:
            return None
        columns.append(value.label(column.name))
    inner = plan.query.with_only_columns(*columns, maintain_column_froms=True)
    # A name no column has: in PostgreSQL a column of the alias's name would win.
    rows = inner.subquery("sg_dumped_row")
    outer = sa.select(sa.func.row_to_json(sa.literal_column("sg_dumped_row"))) \
        .select_from(rows)
    compiled = outer.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    # The subquery's ORDER BY holds: the outer query only projects its rows.
    return f"COPY ({compiled}) TO STDOUT"


def _records(conn: Connection, sql: str) -> Iterator[list[str]]:
    """The JSON objects of the COPY's lines, BATCH at a time.

    The server sends a message per row: each is only appended here, and the
    lines are decoded, split and unescaped a megabyte at a time, so the
    Python work per row is what reading the COPY costs anyway.
    """
    # psycopg's own connection (the driver was checked): its COPY API and encoding.
    dbapi: Any = conn.connection.dbapi_connection
    encoding = dbapi.info.encoding
    batch = dump.BATCH
    pending: list[str] = []
    blocks: list[Any] = []
    size = 0

    def lines() -> list[str]:
        data = b"".join(blocks)
        blocks.clear()
        text = data.decode(encoding)
        # Split before unescaping: a newline inside a value is sent as "\\n".
        found = text.split("\n")
        if found and found[-1] == "":
            found.pop()
        if "\\" in text:
            found = [_ESCAPED.sub(_unescape, line) if "\\" in line else line
                     for line in found]
        return found

    with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
        for block in copy:
            # "Messages sent from the backend will always correspond to single data
            # rows" (PostgreSQL protocol, COPY): a chunk of them is whole lines.
            blocks.append(block)
            size += len(block)
            if size < 1 << 20:
                continue
            size = 0
            pending.extend(lines())
            while len(pending) >= batch:  # partitions of BATCH rows, as when streamed
                yield pending[:batch]
                del pending[:batch]
        if blocks:
            pending.extend(lines())
        while pending:
            yield pending[:batch]
            del pending[:batch]
