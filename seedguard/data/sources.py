"""Where a data seed's records come from: a list of rows, or a CSV, JSON or YAML file.

Files are streamed: CSV with :mod:`csv`, JSON (a list of objects) with an
incremental decoder (:func:`json_items`), so memory stays flat however large
the file is; YAML is parsed whole. A source also yields its bytes for the
checksum (:meth:`Source.chunks`), and, for CSV, the row count that comes free
with them (for progress).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from seedguard.errors import DataError, DefinitionError

_BLOCK = 1 << 20
DATA_SUFFIXES = (".csv", ".json", ".yaml", ".yml")
_WS = re.compile(r"\s*")


class Source:
    """A data seed's records, and its bytes for the checksum.

    ``text``: values arrive as strings (CSV), so an empty field is NULL
    except in string columns; ``where_path``: the file named in messages.
    """

    text = False
    where_path = ""

    def chunks(self) -> Iterator[bytes]:
        raise NotImplementedError

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(where, record) pairs; ``where`` names the place in messages ("file:line")."""
        raise NotImplementedError

    def total(self) -> int | None:
        return None


class RowsSource(Source):
    """Rows given as a list of dicts (``data_seed(rows=...)``)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def chunks(self) -> Iterator[bytes]:
        yield json.dumps(self.rows, sort_keys=True, default=str).encode()

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for index, row in enumerate(self.rows):
            yield f"rows[{index}]", row

    def total(self) -> int | None:
        return len(self.rows)


class FileSource(Source):
    """A ``.csv`` (with a header row), ``.json`` or ``.yaml``/``.yml`` file, streamed."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.where_path = str(path)
        suffix = path.suffix.lower()
        if suffix not in DATA_SUFFIXES:
            raise DefinitionError(
                f"data file {path}: use a .csv file (with a header row), a .json file "
                "(a list of objects) or a .yaml/.yml file (a list of mappings)"
            )
        self.text = suffix == ".csv"
        self.yaml = suffix in (".yaml", ".yml")
        if self.yaml:
            try:
                import yaml  # noqa: F401
            except ImportError as err:
                raise DefinitionError(
                    f"data file {path}: reading YAML needs PyYAML; install the extra: "
                    "pip install 'seedguard[yaml]'"
                ) from err
        self._lines: int | None = None

    def chunks(self) -> Iterator[bytes]:
        lines = 0
        last = b"\n"
        try:
            with open(self.path, "rb") as f:
                while block := f.read(_BLOCK):
                    lines += block.count(b"\n")
                    last = block[-1:]
                    yield block
        except FileNotFoundError as err:
            raise DataError(
                f"data file {self.path} not found; relative paths are resolved against the "
                "directory of the module that calls data_seed()", path=str(self.path),
            ) from err
        # For progress: rows are about the lines after the header (the count
        # comes free with the checksum, which every run takes first).
        self._lines = lines + (last != b"\n")

    def total(self) -> int | None:
        if not self.text or self._lines is None:
            return None
        return max(self._lines - 1, 0)

    def records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        try:
            if self.text:
                yield from self._csv_records()
            elif self.yaml:
                yield from self._yaml_records()
            else:
                yield from self._json_records()
        except FileNotFoundError as err:
            raise DataError(f"data file {self.path} not found", path=str(self.path)) from err
        except UnicodeDecodeError as err:
            raise DataError(
                f"data file {self.path} is not {self.encoding} text ({err.reason} at byte "
                f"{err.start}); save it as UTF-8 or pass encoding=", path=str(self.path),
            ) from err

    def _csv_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        with open(self.path, newline="", encoding=self.encoding) as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(f"{self.path}:1: {err}", path=str(self.path), line=1) from err
            header = [h.strip() for h in header]
            for column in header:
                if not column or header.count(column) > 1:
                    raise DataError(
                        f"{self.path}:1: header has an empty or repeated column {column!r}",
                        path=str(self.path), line=1, column=column,
                    )
            width = len(header)
            try:
                for values in reader:
                    if not values:
                        continue
                    if len(values) != width:
                        raise DataError(
                            f"{self.path}:{reader.line_num}: {len(values)} fields, the header "
                            f"has {width}; fix the row (quote values that contain commas)",
                            path=str(self.path), line=reader.line_num,
                        )
                    yield f"{self.path}:{reader.line_num}", dict(zip(header, values, strict=True))
            except csv.Error as err:
                raise DataError(f"{self.path}:{reader.line_num}: {err}", path=str(self.path),
                                line=reader.line_num) from err

    def _json_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for line, item in json_items(self.path, self.encoding):
            if not isinstance(item, dict):
                raise DataError(
                    f"{self.path}:{line}: expected an object, got {type(item).__name__}; the "
                    "file must hold a list of objects", path=str(self.path), line=line,
                )
            yield f"{self.path}:{line}", item

    def _yaml_records(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        import yaml

        with open(self.path, encoding=self.encoding) as f:
            loader = yaml.SafeLoader(f)
            try:
                root = loader.get_single_node()
                if root is None:
                    return
                if not isinstance(root, yaml.SequenceNode):
                    raise DataError(
                        f"{self.path}:{root.start_mark.line + 1}: expected a list of mappings; "
                        "the file must hold a YAML list (lines starting with '- ')",
                        path=str(self.path), line=root.start_mark.line + 1)
                # PyYAML has no streaming reader for a list: the node tree is
                # composed whole, but each item is built into a dict on its own.
                for node in root.value:
                    line = node.start_mark.line + 1
                    item = loader.construct_object(node, deep=True)
                    if not isinstance(item, dict):
                        raise DataError(
                            f"{self.path}:{line}: expected a mapping, got "
                            f"{type(item).__name__}; the file must hold a list of mappings",
                            path=str(self.path), line=line)
                    yield f"{self.path}:{line}", item
            except yaml.MarkedYAMLError as err:
                mark = err.problem_mark or err.context_mark
                line = mark.line + 1 if mark is not None else 1
                raise DataError(f"{self.path}:{line}: invalid YAML ({err.problem})",
                                path=str(self.path), line=line) from err
            finally:
                loader.dispose()


def json_items(path: Path, encoding: str) -> Iterator[tuple[int, Any]]:
    """The items of a top-level JSON list, decoded one at a time with their line numbers."""
    decoder = json.JSONDecoder()
    with open(path, encoding=encoding) as f:
        buf = ""
        pos = 0
        line = 1
        eof = False

        def advance(to: int) -> None:
            nonlocal pos, line
            line += buf.count("\n", pos, to)
            pos = to

        def more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = f.read(_BLOCK)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def peek() -> str:
            while True:
                match = _WS.match(buf, pos)
                assert match is not None
                advance(match.end())
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        def fail(what: str) -> DataError:
            return DataError(f"{path}:{line}: {what}; the file must hold a JSON list of objects",
                             path=str(path), line=line)

        if peek() != "[":
            raise fail("expected '['")
        advance(pos + 1)
        if peek() == "]":
            return
        while True:
            if peek() == "":
                raise fail("unexpected end of file")
            while True:
                try:
                    item, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as err:
                    if more():
                        continue
                    raise fail(f"invalid JSON ({err.msg})") from err
                # A scalar at the buffer's end may continue in the next block.
                if end == len(buf) and not isinstance(item, (dict, list)) and more():
                    continue
                break
            start = line
            advance(end)
            yield start, item
            sep = peek()
            if sep == "]":
                return
            if sep != ",":
                raise fail(f"expected ',' or ']', found {sep!r}" if sep else "unexpected end")
            advance(pos + 1)
