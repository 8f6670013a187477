"""ISO 8601 as Python 3.11's ``fromisoformat`` reads it, for Python 3.10.

Python 3.11 reads most of ISO 8601 in fromisoformat (basic format, "Z", week
dates, any number of fraction digits); 3.10 reads only its own isoformat()
output. On 3.10 the forms below are parsed here, to the same values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

_DATE = (r"(?P<y>\d{4})(?:-(?P<m>\d{2})-(?P<d>\d{2})|(?P<bm>\d{2})(?P<bd>\d{2})"
         r"|-W(?P<w>\d{2})(?:-(?P<wd>\d))?|W(?P<bw>\d{2})(?P<bwd>\d)?)")
_TIME = (r"(?P<H>\d{2})(?:(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d+))?)?)"
         r"|(?:(?P<bM>\d{2})(?:(?P<bS>\d{2})(?:[.,](?P<bf>\d+))?)?))?")
_ZONE = r"(?P<z>Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?)?"
_DATE_RE = re.compile(_DATE)
_TIME_RE = re.compile(f"T?{_TIME}{_ZONE}")
_DATETIME_RE = re.compile(f"{_DATE}(?:[Tt ]{_TIME}{_ZONE})?")


def _date_310(text: str) -> dt.date:
    match = _DATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    return _date_of(match)


def _time_310(text: str) -> dt.time:
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    return _time_of(match)


def _datetime_310(text: str) -> dt.datetime:
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"Invalid isoformat string: {text!r}")
    day = _date_of(match)
    if match["H"] is None:
        return dt.datetime(day.year, day.month, day.day)
    return dt.datetime.combine(day, _time_of(match))


def _date_of(match: re.Match[str]) -> dt.date:
    year = int(match["y"])
    week = match["w"] or match["bw"]
    if week is not None:
        return dt.date.fromisocalendar(year, int(week), int(match["wd"] or match["bwd"] or 1))
    return dt.date(year, int(match["m"] or match["bm"]), int(match["d"] or match["bd"]))


def _time_of(match: re.Match[str]) -> dt.time:
    fraction = match["f"] or match["bf"] or ""
    return dt.time(int(match["H"]), int(match["M"] or match["bM"] or 0),
                   int(match["S"] or match["bS"] or 0), int(fraction[:6].ljust(6, "0")),
                   tzinfo=_zone(match["z"]))


def _zone(text: str | None) -> dt.tzinfo | None:
    if text is None:
        return None
    if text == "Z":
        return dt.timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    whole, _, micro = digits.partition(".")
    offset = dt.timedelta(hours=int(whole[:2]), minutes=int(whole[2:4] or 0),
                          seconds=int(whole[4:6] or 0), microseconds=int(micro.ljust(6, "0")))
    return dt.timezone(sign * offset)


ISO_310: dict[type[Any], Callable[[str], Any]] = {
    dt.date: _date_310, dt.datetime: _datetime_310, dt.time: _time_310,
}

