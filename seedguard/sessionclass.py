"""Which Session class a unit receives: its annotation, ``session_class=``, or SQLAlchemy's.

SQLModel apps write through ``sqlmodel.Session`` (``session.exec(select(...))``)
and pass it to CRUD helpers that expect one; a plain SQLAlchemy ``Session``
has no ``.exec()``. A unit says which class it wants by annotating its
session parameter, and ``apply(..., session_class=...)`` sets the class for
every unit that does not. Either way the session is bound to the unit's own
connection and transaction, joined as SQLAlchemy's own would be
(:func:`seedguard.sessions.unit_session`).

The annotation is read once per function and resolved without evaluating it:
a string annotation (``from __future__ import annotations``) is looked up as
a dotted name in the function's module globals, so nothing is imported for
it (SQLModel included: a unit that names ``sqlmodel.Session`` already
imported it). A name that is not there at run time (imported under
``TYPE_CHECKING``) or that is no Session class leaves the default in place.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Callable
from types import FunctionType
from typing import TYPE_CHECKING, Any, NamedTuple

from seedguard.errors import ConfigError, DefinitionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"  # compiled when first asked
_ASYNCIO = "sqlalchemy.ext.asyncio"


class UnitClasses(NamedTuple):
    """The classes one unit's sessions are made of."""

    sync: type[Session]
    """The Session on the unit's connection (what ``db.session`` and scoped sessions return)."""
    asynchronous: type[AsyncSession] | None
    """For an ``async def`` unit: the AsyncSession it receives; None for a plain unit."""


def check_default(session_class: object) -> None:
    """Refuse a ``session_class=`` that is neither a Session nor an AsyncSession class."""
    if session_class is None:
        return
    from sqlalchemy.orm import Session

    if _is_async_class(session_class) or (
            isinstance(session_class, type) and issubclass(session_class, Session)):
        return
    raise ConfigError(
        f"session_class={session_class!r}: expected a Session class, such as "
        "sqlmodel.Session (sqlalchemy.orm.Session or a subclass), or for async units "
        "sqlmodel.ext.asyncio.session.AsyncSession (an AsyncSession subclass)"
    )


def classes_for(fn: Callable[..., Any], is_async: bool,
                default: type[Any] | None = None) -> UnitClasses:
    """The session classes for the unit whose work is ``fn``.

    :param fn: the unit's function.
    :param is_async: whether ``fn`` is an ``async def`` unit.
    :param default: ``apply(session_class=...)``: a Session subclass (for
        plain units; async units get an AsyncSession whose sync session is of
        this class) or an AsyncSession subclass (for async units; plain units
        get its ``sync_session_class``, which for SQLModel's is ``sqlmodel.Session``).

    The unit's own annotation wins, unless ``default`` is a subclass of it
    (a unit annotated ``sqlalchemy.orm.Session`` is happy with a
    ``sqlmodel.Session``).
    """
    from sqlalchemy.orm import Session

    annotated = annotated_class(fn)
    default_async = default if _is_async_class(default) else None
    default_sync: type[Session] | None = (
        default_async.sync_session_class if default_async is not None else default)
    if not is_async:
        if annotated is not None and _is_async_class(annotated):
            raise DefinitionError(
                f"unit function {_name(fn)} is a plain `def` annotated with {annotated.__name__}, "
                "an async session class: make it `async def` (and run it with "
                "apply_async), or annotate it with a sync Session (sqlmodel.Session)"
            )
        return UnitClasses(_narrowest(annotated, default_sync) or Session, None)
    if annotated is not None and not _is_async_class(annotated):
        raise DefinitionError(
            f"unit function {_name(fn)} is `async def` but annotated with "
            f"{annotated.__name__}, a sync Session class: annotate it with "
            "sqlmodel.ext.asyncio.session.AsyncSession (or sqlalchemy's AsyncSession)"
        )
    from sqlalchemy.ext.asyncio import AsyncSession

    chosen: type[AsyncSession] = _narrowest(annotated, default_async) or AsyncSession
    return UnitClasses(default_sync if chosen is AsyncSession and default_sync is not None
                       else chosen.sync_session_class, chosen)


def _narrowest(annotated: type[Any] | None, default: type[Any] | None) -> type[Any] | None:
    if annotated is None:
        return default
    if default is not None and issubclass(default, annotated):
        return default
    return annotated


@functools.cache
def annotated_class(fn: Callable[..., Any]) -> type[Any] | None:
    """The Session or AsyncSession class ``fn``'s first parameter is annotated with, if any."""
    annotation = _first_annotation(fn)
    if annotation is None:
        return None
    found = _resolve(annotation, getattr(fn, "__globals__", {}))
    if found is None:
        return None
    from sqlalchemy.orm import Session

    if _is_async_class(found) or issubclass(found, Session):
        return found
    return None


def _first_annotation(fn: Callable[..., Any]) -> object:
    if type(fn) is FunctionType:
        # The code object names the first parameter: no inspect.signature()
        # for every unit of a large app.
        code = fn.__code__
        if code.co_argcount + code.co_posonlyargcount == 0:
            return None
        return fn.__annotations__.get(code.co_varnames[0])
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or parameters[0].annotation is inspect.Parameter.empty:
        return None
    return parameters[0].annotation


def _resolve(annotation: object, namespace: dict[str, Any]) -> type[Any] | None:
    if isinstance(annotation, type):
        return annotation
    if not isinstance(annotation, str):
        return None
    # "Session | None" (an optional session): the one class named in it.
    names = [part.strip() for part in annotation.strip("'\" ").split("|")]
    names = [name for name in names if name != "None"]
    if len(names) != 1 or not re.fullmatch(_DOTTED, names[0]):
        return None
    first, *rest = names[0].split(".")
    obj = namespace.get(first)
    if obj is None:
        obj = sys.modules.get(first) if rest else None
    for part in rest:
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _is_async_class(cls: object) -> bool:
    # An AsyncSession subclass exists only once sqlalchemy.ext.asyncio is
    # imported: asking costs no import for sync apps.
    module = sys.modules.get(_ASYNCIO)
    return (module is not None and isinstance(cls, type)
            and issubclass(cls, module.AsyncSession))


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
