"""The exception tree: everything seedguard raises is a :class:`SeedguardError`.

Each error carries what a caller needs to act on it as attributes, pickles
cleanly (so it crosses process boundaries: multiprocessing, pytest-xdist), and
says in its message what to do next. SQLAlchemy and filelock errors are
translated where they cross into seedguard, with the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def keyword(setting: str) -> str:
    """How the library spells a setting: ``lock_timeout=`` (as :func:`seedguard.apply` takes it)."""
    return f"{setting}="


class SeedguardError(Exception):
    """Root of every error seedguard raises.

    An error that tells the reader to change a setting carries the setting:
    ``settings`` names it (``("lock_timeout",)``), and the message, given as
    a template with ``{lock_timeout}`` where the setting is named, reads in
    the library's words (``raise lock_timeout=``). Each front end spells it
    in its own with :meth:`spelled`: the command line's ``--lock-timeout``,
    a Flask app's ``SEEDGUARD_LOCK_TIMEOUT``.

    :param args: the message (a template when ``settings`` is given), as for
        any exception.
    :param settings: the settings the message names, by their names in
        :mod:`seedguard.settings`.
    """

    template: str = ""
    settings: tuple[str, ...] = ()

    def __init__(self, *args: Any, settings: Iterable[str] = ()) -> None:
        names = tuple(settings)
        if names and args:
            # Instance attributes, so that pickling (which restores __dict__) keeps them.
            self.template, self.settings = str(args[0]), names
            args = (_spelled(self.template, names, keyword), *args[1:])
        super().__init__(*args)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each setting it names as ``spell(name)`` spells it."""
        if not self.settings:
            return str(self)
        return _spelled(self.template, self.settings, spell)


def _spelled(template: str, settings: tuple[str, ...], spell: Callable[[str], str]) -> str:
    # Plain replacement, not str.format: a message may hold braces of its own
    # (a repr, a JSON value) that are no placeholders.
    for name in settings:
        template = template.replace("{" + name + "}", spell(name))
    return template


class ConfigError(SeedguardError):
    """No database, a bad URL, a missing driver or seeds module, a bad setting."""


class DefinitionError(SeedguardError):
    """A unit is declared wrongly: bad name or version, duplicate, unknown dependency, cycle."""


class LockTimeout(SeedguardError, TimeoutError):
    """Another applier held a lock for longer than ``lock_timeout``.

    ``lock`` names the lock (a file path or a database lock key) and ``holder``
    describes who held it (pid, host, since when) as far as it could be read.
    """

    def __init__(self, message: str, *, lock: str = "", holder: str = "",
                 settings: Iterable[str] = ()) -> None:
        super().__init__(message, settings=settings)
        self.lock = lock
        self.holder = holder

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {"lock": self.lock, "holder": self.holder}),
                self.__dict__)


class WaitTimeout(SeedguardError, TimeoutError):
    """:func:`seedguard.wait` gave up: units were still pending after ``timeout`` seconds.

    ``pending`` names them; ``timeout`` is the limit that was reached.
    """

    def __init__(self, message: str, *, pending: Any = (), timeout: float | None = None
                 ) -> None:
        super().__init__(message)
        self.pending = list(pending)
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args,
                           {"pending": self.pending, "timeout": self.timeout}))


class SeedFailed(SeedguardError):
    """A unit failed. The original error is ``__cause__``.

    ``unit`` is the :class:`~seedguard.SeedUnit` that failed. ``rolled_back``
    is True only when seedguard verified that the unit's transaction was still
    the one it opened and rolled it back, so nothing of the unit stayed; when
    False, the message says what may be left (see ``docs/guarantees.md``).
    """

    def __init__(self, message: str, *, unit: Any = None, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.unit = unit
        self.rolled_back = rolled_back

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args,
                           {"unit": self.unit, "rolled_back": self.rolled_back}))


class DriftError(SeedguardError):
    """An applied unit's code or data changed and policy says that is an error.

    ``drifted`` lists the :class:`~seedguard.result.Drift` records found.
    """

    def __init__(self, message: str, *, drifted: Any = ()) -> None:
        super().__init__(message)
        self.drifted = list(drifted)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {"drifted": self.drifted}))


class DataError(SeedguardError, ValueError):
    """Seed data or an upsert call is wrong: bad value, unknown column, key without a unique index.

    ``path``, ``line`` and ``column`` say where, as far as known (data seeds).
    """

    def __init__(self, message: str, *, path: str = "", line: int | None = None,
                 column: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args,
                           {"path": self.path, "line": self.line, "column": self.column}))


class UnitBlocked(SeedFailed):
    """A unit's work may be partly done; it blocks until an operator resolves it.

    Its ledger row is ``running`` (a non-transactional unit interrupted
    mid-way) or ``dirty`` (a transactional unit whose transaction was ended
    mid-way and then failed, so part of its work may be committed). Resolve it
    with ``seedguard resolve NAME --applied`` (its work is complete) or
    ``--retry`` (run it again).
    """


def resolve_advice(name: str) -> str:
    """How to settle unit ``name`` whose work may be partly done: the one spelling of it.

    Every message about a blocked unit (the runner's refusal and failure, the
    CLI's status line, stamp's and stamp --all's refusals) names it this way.
    """
    return f"`seedguard resolve {name} --applied` or `seedguard resolve {name} --retry`"


class UnitEscape(SeedguardError):
    """A unit tried to end its transaction early or to write around it.

    Raised where the write or the ending was attempted (in the unit, or in a
    thread or engine writing to the unit's database while it runs); the unit
    then fails with it as the cause, whether or not it caught the error.
    """


class PlanStale(SeedguardError):
    """A reviewed plan no longer matches what would be applied: nothing was.

    ``changes`` lists what differs, one line each (a unit pending that was not
    planned, a changed checksum, other contexts, ledger rows changed since).
    """

    def __init__(self, message: str, *, changes: Any = ()) -> None:
        super().__init__(message)
        self.changes = list(changes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {"changes": self.changes}))


class DowngradeRefused(SeedguardError):
    """``seedguard downgrade`` found rows the data seed wrote changed since: it changed nothing.

    ``name`` is the unit's name; ``rows`` lists the rows, each a
    :class:`seedguard.downgrade.ChangedRow` (table, key, what changed).
    """

    def __init__(self, message: str, *, name: str = "", rows: Any = ()) -> None:
        super().__init__(message)
        self.name = name
        self.rows = list(rows)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {"name": self.name, "rows": self.rows}))


def _rebuild(cls: type[SeedguardError], args: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    """Unpickle an error whose ``__init__`` takes keyword-only attributes."""
    err = cls(*args, **attrs)
    return err
