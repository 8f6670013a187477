"""Converting a raw value (a CSV string, a JSON or YAML value) to its column's type.

A value that does not convert raises ``ValueError``, ``TypeError`` or
``ArithmeticError``; the data seed turns that into a DataError naming the
file, line and column.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


def converter(column: sa.Column[Any], *, text: bool) -> Callable[[Any], Any]:
    """A function turning a raw value (a CSV string, a JSON value) into the column's type.

    From CSV an empty field is NULL, except in string columns, where it is ''.
    """
    import sqlalchemy as sa
    kind = column.type
    is_string = isinstance(kind, sa.String)
    parse: Callable[[Any], Any]
    # MySQL/MariaDB store BOOLEAN as TINYINT(1), and reflect it that way.
    if isinstance(kind, sa.Boolean) or (type(kind).__name__ == "TINYINT"
                                        and getattr(kind, "display_width", None) == 1):
        parse = _to_bool
    elif isinstance(kind, sa.Integer):
        parse = _to_int
    elif isinstance(kind, sa.Float) or (isinstance(kind, sa.Numeric) and not kind.asdecimal):
        parse = _to_float
    elif isinstance(kind, sa.Numeric):
        parse = _to_decimal
    elif isinstance(kind, sa.DateTime):
        parse = _iso(dt.datetime)
    elif isinstance(kind, sa.Date):
        parse = _iso(dt.date)
    elif isinstance(kind, sa.Time):
        parse = _iso(dt.time)
    elif isinstance(kind, sa.JSON):
        if not text:
            return lambda value: value
        parse = json.loads
    elif isinstance(kind, sa.Uuid):
        parse = _to_uuid if kind.as_uuid else str
    elif isinstance(kind, sa.LargeBinary):
        parse = _to_bytes
    elif is_string:
        parse = _to_str
    else:
        return lambda value: value

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if text and value == "" and not is_string:
            return None
        return parse(value)

    return convert


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        token = value.strip().lower()
        if token in _TRUE:
            return True
        if token in _FALSE:
            return False
    raise ValueError("expected true/false, yes/no, 1/0")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("not a whole number")
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"{type(value).__name__} is not a number")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    return float(value)


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, (int, str, decimal.Decimal)):
        result = decimal.Decimal(value.strip() if isinstance(value, str) else value)
    elif isinstance(value, float):
        result = decimal.Decimal(repr(value))
    else:
        raise TypeError(f"{type(value).__name__} is not a number")
    if not result.is_finite():
        raise ValueError("not a finite number")
    return result


def _iso(kind: type[Any]) -> Callable[[Any], Any]:
    read = kind.fromisoformat if sys.version_info >= (3, 11) else _iso_310(kind)

    def parse(value: Any) -> Any:
        if isinstance(value, kind) and (kind is not dt.date or not isinstance(value, dt.datetime)):
            return value
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
        return read(value.strip())

    return parse


def _iso_310(kind: type[Any]) -> Callable[[str], Any]:
    from seedguard.data.iso310 import ISO_310

    return ISO_310[kind]


def _to_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("\\x"))
    raise TypeError(f"expected hex text, got {type(value).__name__}")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list)):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return str(value)

