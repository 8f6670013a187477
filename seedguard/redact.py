"""Passwords out of every output: the one place that decides what of a URL may be shown.

Everything seedguard prints, logs, raises or writes to disk that could hold a
database URL goes through :func:`redact_url` (a URL shown on purpose) or
:func:`redact` (any text: a driver's error message, a JSON document), so
one rule covers every spelling of a secret:

- the password in the URL's user info, percent-encoded or not;
- a password with an unescaped ``@``: SQLAlchemy's ``make_url`` ends the
  password at the *first* ``@``, so the rest of the password becomes part of
  the host (``app:Pw@Tail@db`` parses as password ``Pw``, host ``Tail@db``);
  a host can never contain ``@``, so everything before its last ``@`` is
  treated as password too;
- secrets passed as query parameters, which SQLAlchemy's own
  ``render_as_string(hide_password=True)`` prints as they are: every key
  that names a password, passphrase, token or secret (libpq's ``password``,
  ``sslpassword`` and ``passfile``; PyMySQL's and mysqlclient's ``passwd``
  and ``password``; asyncpg's and aiomysql's ``password``; ``pwd``);
- and, in free text, ``password=...`` pairs and ``scheme://user:...@``
  spellings that a driver echoes back even when the URL is not known here.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MASK = "***"

# A query key is secret when its name contains one of these (case-insensitive):
# password, passwd, sslpassword, passfile, ssl_key_password, pwd, auth_token,
# client_secret... Over-matching hides a harmless value; under-matching leaks.
_SECRET_WORDS = ("pass", "pwd", "secret", "token")

# Secrets shorter than this are not searched for in free text (a one-letter
# password would blank every such letter of a message); the structural rules
# below still hide them wherever a URL or a key=value pair spells them.
_MIN_SEARCHED = 4

# password=..., sslpassword = '...', 'passwd': '...' in DSNs, conninfo strings,
# reprs of keyword arguments and JSON ("using password: YES" stays readable).
_KEY_VALUE = (
    r"""(?P<key>\b(?:ssl_?|ssl_key_)?(?:password|passwd|passphrase|pwd)(?:\s*=|['"]\s*:)\s*)"""
    r"""(?P<value>'[^']*'|"[^"]*"|[^\s&;,)'"]+)"""
)
# scheme://user:secret@host: the secret runs to the last "@" of the URL.
_USERINFO = r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<secret>[^\s]*)@"


@functools.cache
def _key_value() -> re.Pattern[str]:
    # Compiled on first use: most processes never print a URL or an error.
    return re.compile(_KEY_VALUE, re.IGNORECASE)


@functools.cache
def _userinfo() -> re.Pattern[str]:
    return re.compile(_USERINFO)


def is_secret_key(key: str) -> bool:
    """Whether a URL query parameter named ``key`` carries a secret."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _parse(url: URL | str) -> URL | None:
    if not isinstance(url, str):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def misplaced_password(url: URL) -> str | None:
    """The part of the password that ``make_url`` put in the host (an unescaped ``@``)."""
    host = url.host or ""
    if "@" not in host:
        return None
    return host.rpartition("@")[0]


def secrets(*urls: URL | str | None) -> list[str]:
    """Every secret the URLs carry, in each spelling it may be printed in, longest first."""
    found: set[str] = set()
    for url in urls:
        if url is None:
            continue
        parsed = _parse(url)
        if parsed is None:
            found.update(_text_secrets(str(url)))
            continue
        password = parsed.password
        values = [str(password)] if password is not None else []
        tail = misplaced_password(parsed)
        if tail is not None:
            values += [tail, f"{password or ''}@{tail}"]
        for key, value in parsed.query.items():
            if is_secret_key(key):
                values += [value] if isinstance(value, str) else list(value)
        if isinstance(url, str):
            values += _text_secrets(url)
        for value in values:
            found.update(_spellings(value))
    return sorted((s for s in found if len(s) >= _MIN_SEARCHED), key=len, reverse=True)


def _spellings(value: str) -> set[str]:
    return {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
            urllib.parse.quote(value)}


def _text_secrets(text: str) -> list[str]:
    """Secrets in a URL that cannot be parsed: user info and secret query values."""
    values = [m.group("secret") for m in _userinfo().finditer(text)]
    userinfo = text.partition("://")[2 if "://" in text else 0].rpartition("@")[0]
    if ":" in userinfo:
        values.append(userinfo.split(":", 1)[1])
    for match in _key_value().finditer(text):
        values.append(match.group("value").strip("'\""))
    return [urllib.parse.unquote(v) for v in values] + values


def redact_url(url: URL | str) -> str:
    """``url`` as text for people: every password and secret parameter shown as ``***``."""
    parsed = _parse(url)
    if parsed is None:
        return redact(_mask_unparsed(str(url)))
    tail = misplaced_password(parsed)
    if tail is not None:
        parsed = parsed.set(host=(parsed.host or "").rpartition("@")[2],
                            password=MASK)
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    if parsed.query:
        pairs = []
        for key in sorted(parsed.query):
            value = parsed.query[key]
            for item in [value] if isinstance(value, str) else value:
                item_text = MASK if is_secret_key(key) else urllib.parse.quote_plus(item)
                pairs.append(f"{urllib.parse.quote_plus(key)}={item_text}")
        shown += "?" + "&".join(pairs)
    return shown


def _mask_unparsed(text: str) -> str:
    """A URL ``make_url`` cannot read, its user info's password (to the last ``@``) masked."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:{MASK}@{host}"


def without_secrets(url: URL | str) -> str:
    """``url`` with its password and secret parameters removed (for files that get committed)."""
    parsed = _parse(url)
    if parsed is None:
        return redact(_mask_unparsed(str(url)))
    if misplaced_password(parsed) is not None:
        parsed = parsed.set(host=(parsed.host or "").rpartition("@")[2])
    query = {key: value for key, value in parsed.query.items() if not is_secret_key(key)}
    return parsed._replace(password=None).set(query=query).render_as_string(hide_password=False)


def has_secrets(url: URL | str) -> bool:
    """Whether ``url`` carries a password or a secret parameter."""
    parsed = _parse(url)
    if parsed is None:
        return bool(_text_secrets(str(url)))
    return (parsed.password is not None or misplaced_password(parsed) is not None
            or any(is_secret_key(key) for key in parsed.query))


def redact(text: str, *urls: URL | str | None, extra: Iterable[str] = ()) -> str:
    """``text`` with every secret of ``urls`` (and any password it spells itself) hidden."""
    for secret in [*secrets(*urls), *extra]:
        if secret:
            text = text.replace(secret, MASK)
    text = _userinfo().sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _key_value().sub(lambda m: f"{m.group('key')}{MASK}", text)


__all__ = ["MASK", "has_secrets", "is_secret_key", "redact", "redact_url", "secrets",
           "without_secrets"]
