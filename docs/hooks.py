"""MkDocs hook: render the docstrings' Sphinx roles as code.

The docstrings use Sphinx's ``:class:`~seedguard.X``` roles, which the Python
handler of mkdocstrings leaves as text ("an :class:`~seedguard.ApplyResult`").
This shows them as the code they name (``~`` keeps the last component, as in
Sphinx).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>(~?)([\w.]+)</code>")


def _code(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(_code, html)
