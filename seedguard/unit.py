"""Seed units: what one unit is, as a value; validation and where it was declared.

A :class:`SeedUnit` knows nothing about registries: ``@seed`` and
``data_seed`` build one and register it (:mod:`seedguard.registry`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from seedguard.checksum import code_checksum
from seedguard.dialects import parse as parse_dialects
from seedguard.errors import DefinitionError
from seedguard.verify import check_function

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

OnChange = Literal["warn", "rerun", "error"]
# Takes the unit's Session, or nothing (then it writes through db.session or a scoped_session).
SeedFunction = Callable[..., Any]

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_ON_CHANGE: tuple[OnChange, ...] = ("warn", "rerun", "error")
MAX_VERSION = 2**31 - 1
"""The largest version the ledger's INTEGER column holds on every database."""


@dataclass(frozen=True, init=False, eq=False, repr=False)
class SeedUnit:
    """One named, versioned piece of seed work.

    ``fn`` receives a :class:`sqlalchemy.orm.Session` bound to the unit's own
    transaction. ``origin`` says where the unit was declared (for messages);
    ``module`` is the module it belongs to (for selection by a seeds path).
    ``identity`` tells a re-declaration of the same unit (same source file and
    function) from a second unit that reuses a name.
    ``checksum_fn`` computes the drift checksum; it is called once per run,
    because for data units it hashes a file that may change between runs.
    ``preview`` is the dry-run hook: called with a connection whose transaction
    is rolled back, it returns what the unit would do (data seeds: row counts).
    ``fills`` and ``reads`` are a data seed's table and the tables its refs
    read: a unit that reads a table another selected unit fills runs after it.
    ``dialects`` limits the unit to some databases (None: every one); elsewhere
    it is not applicable (:mod:`seedguard.dialects`). ``bind`` is the
    Flask-SQLAlchemy bind key of the database the unit runs on (None: the
    default one; :mod:`seedguard.binds`).
    """

    name: str
    fn: SeedFunction
    version: int
    after: tuple[str, ...]
    contexts: frozenset[str] | None
    on_change: OnChange
    transactional: bool
    requires_revision: str | None
    description: str | None
    module: str
    origin: str
    identity: str
    checksum_fn: Callable[[], str] | None
    preview: Callable[[Connection], Any] | None
    fills: frozenset[str]
    reads: frozenset[str]
    dialects: frozenset[str] | None
    bind: str | None

    def __init__(
        self,
        name: str,
        fn: SeedFunction,
        version: int = 1,
        after: tuple[str, ...] = (),
        contexts: frozenset[str] | None = None,
        on_change: OnChange = "warn",
        transactional: bool = True,
        requires_revision: str | None = None,
        description: str | None = None,
        module: str = "",
        origin: str = "",
        identity: str = "",
        checksum_fn: Callable[[], str] | None = None,
        preview: Callable[[Connection], Any] | None = None,
        fills: frozenset[str] = frozenset(),
        reads: frozenset[str] = frozenset(),
        dialects: Iterable[str] | None = None,
        bind: str | None = None,
    ) -> None:
        # Written by hand: a frozen dataclass's own __init__ sets each field
        # through object.__setattr__, which made building the units a fifth of
        # a 1,000-unit app's first apply() (bench/targets.py). Frozen refuses
        # assignment after construction; one update of the new instance's
        # dict is the same result.
        vars(self).update(
            name=name, fn=fn, version=version, after=after, contexts=contexts,
            on_change=on_change, transactional=transactional,
            requires_revision=requires_revision, description=description, module=module,
            origin=origin, identity=identity, checksum_fn=checksum_fn, preview=preview,
            fills=fills, reads=reads, dialects=parse_dialects(name, dialects), bind=bind,
        )
        validate_name(name)
        validate_bind(name, bind)
        validate_version(name, version)
        check_function(name, fn)
        if on_change not in _ON_CHANGE:
            raise DefinitionError(
                f"unit {name!r}: on_change must be one of {', '.join(_ON_CHANGE)}, "
                f"not {on_change!r}"
            )
        for dep in after:
            validate_name(dep, what=f"dependency of unit {name!r}")
        if name in after:
            raise DefinitionError(f"unit {name!r} lists itself in after=")

    def __call__(self, session: Session | None = None) -> Any:
        # A unit may take the session, or nothing (code that writes through
        # db.session or a scoped_session, which are the unit's session then).
        if takes_session(self.fn):
            return self.fn(session)
        return self.fn()

    def __repr__(self) -> str:
        # Name and version identify a unit; the function, its checksum hook and
        # its origin made `print(result)` pages long.
        return f"SeedUnit({self.name!r}, version={self.version})"

    def checksum(self) -> str:
        """The unit's current drift checksum (code or data)."""
        if self.checksum_fn is not None:
            return self.checksum_fn()
        return _cached_code_checksum(self.fn)

    def runs_in(self, active: Collection[str]) -> bool:
        """Whether the unit runs when ``active`` contexts are active."""
        return self.contexts is None or bool(self.contexts & set(active))

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    def __reduce__(self) -> str | tuple[Any, ...]:
        # A decorated unit replaces its function in the module, so pickle it by
        # reference to that module attribute (SeedFailed.unit crosses processes).
        qualname = getattr(self.fn, "__qualname__", "")
        if self.module and qualname and "<" not in qualname:
            return (_import_unit, (self.module, qualname, self.name))
        return (
            _rebuild_unit,
            (self.name, self.version, self.module, self.origin, self.after, self.contexts),
        )


def validate_name(name: object, *, what: str = "unit name") -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"invalid {what} {name!r}: use 1-255 characters of letters, digits and _ . : -"
        )


def validate_bind(name: str, bind: object) -> None:
    if bind is not None and (not isinstance(bind, str) or not bind):
        raise DefinitionError(
            f"unit {name!r}: bind must be a Flask-SQLAlchemy bind key (a key of "
            f"SQLALCHEMY_BINDS) or None for the default database, not {bind!r}"
        )


def validate_version(name: str, version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 1 <= version <= MAX_VERSION:
        raise DefinitionError(
            f"unit {name!r}: version must be an integer >= 1 and <= {MAX_VERSION} (the "
            f"ledger's 32-bit column), not {version!r}"
        )


def describe_origin(fn: Callable[..., Any]) -> str:
    """``module.qualname (file:line)``, for messages that point at a declaration."""
    return declared_at(fn)[0]


def declared_at(fn: Callable[..., Any]) -> tuple[str, str]:
    """Where ``fn`` was declared: ``(origin, identity)``.

    ``origin`` is ``module.qualname (file:line)``, for messages. ``identity``
    tells a re-declaration of one function from a second unit that reuses a
    name: it names the file, not the module, since ``python app.py`` declares
    under ``__main__`` and a later ``import app`` declares the same function
    again under ``"app"``.
    """
    # Asked once per declared unit: no repr() unless it is needed, and the
    # code object knows its file and first line (inspect.getsourcelines would
    # read and tokenize the file for each unit at every start-up).
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or "?"
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"{module}.{qualname}", f"{module}:{qualname}"
    return (f"{module}.{qualname} ({code.co_filename}:{code.co_firstlineno})",
            f"{code.co_filename}:{qualname}")


@functools.cache
def takes_session(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts one positional argument (asked when it first runs)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume the documented form
        return True
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p for p in positional if p.default is p.empty and p.kind != p.VAR_POSITIONAL]
    if len(required) > 1:
        raise DefinitionError(
            f"seed function {describe_origin(fn)} takes {len(required)} arguments; a unit "
            "takes the session, or no argument at all (then use db.session or your "
            "scoped_session, which are the unit's session while it runs)"
        )
    return bool(positional)


@functools.cache
def _cached_code_checksum(fn: SeedFunction) -> str:
    # A function's code cannot change while it is loaded, so hash it once.
    return code_checksum(fn)


def _import_unit(module: str, qualname: str, name: str) -> SeedUnit:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, SeedUnit):
        raise DefinitionError(f"{module}.{qualname} is no longer the seed unit {name!r}")
    return obj


def _rebuild_unit(
    name: str,
    version: int,
    module: str,
    origin: str,
    after: tuple[str, ...],
    contexts: frozenset[str] | None,
) -> SeedUnit:
    """A stand-in for a unit whose function cannot be pickled: it keeps the identity only."""

    def unavailable(session: Session) -> None:
        raise DefinitionError(f"unit {name!r} was unpickled without its function")

    return SeedUnit(
        name=name, fn=unavailable, version=version, after=after, contexts=contexts,
        module=module, origin=origin,
    )
