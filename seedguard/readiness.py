"""``seedguard.wait()``: a readiness gate that returns once the seeds are in.

Replicas, init containers and readiness probes wait here for whichever
applier is seeding (another replica, a Helm hook Job, a compose service)
instead of polling ``seedguard check`` in a shell loop. It only reads, with
the same lock-free look at the ledger that ``apply()``'s fast path takes, and
never applies anything.

Between looks it sleeps with backoff, capped well under a second, so it
returns within a second of the applier's last commit. On PostgreSQL it also
LISTENs on the ledger's channel (:mod:`seedguard.notify`): the applier
notifies in each unit's transaction, so the waiter looks again as soon as a
unit commits, and polls only rarely as a fallback.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from seedguard import config as _config
from seedguard.admin import Bind, _settings
from seedguard.api import select as select_units
from seedguard.connect import engine_for
from seedguard.errors import ConfigError, WaitTimeout
from seedguard.registry import SeedsSpec
from seedguard.result import ApplyResult

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from seedguard.ledger import Ledger
    from seedguard.unit import SeedUnit

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 0.05
"""The first pause between looks; it doubles up to the cap."""
POLL_CAP_SECONDS = 0.4
"""The longest pause between looks without a notification channel: a waiter
sees a commit at most this long (plus one look) after it happens."""
LISTEN_POLL_CAP_SECONDS = 2.0
"""With LISTEN, looks without a notification are only a fallback (an applier
configured with another spelling of the ledger notifies another channel)."""


def wait(
    bind: Bind = None,
    *,
    seeds: SeedsSpec = None,
    contexts: Iterable[str] | None = None,
    timeout: float | None = None,
    bind_key: str | None = None,
) -> ApplyResult:
    """Return once no selected unit is pending or running; apply nothing.

    For replicas that start while another process seeds the database: an
    init container, a readiness probe, a service that must not serve before
    its reference data is there.

    :param bind: an ``Engine``, a database URL, or ``None`` (found as
        :func:`seedguard.apply` finds it).
    :param seeds: which units to wait for, as :func:`seedguard.apply` selects them.
    :param contexts: the active contexts, as :func:`seedguard.apply` takes them.
    :param timeout: seconds to wait at most; ``None`` waits as long as it takes.
    :param bind_key: only the units of this Flask-SQLAlchemy bind, as for
        :func:`seedguard.apply`; ``None`` inside an app context: every bind's
        units, each looked for in its own database's ledger (one ``timeout``
        for them all).
    :returns: an :class:`~seedguard.ApplyResult` whose ``skipped`` lists the
        selected units (all applied) and whose ``applied`` is empty.
    :raises WaitTimeout: still pending after ``timeout`` seconds; ``.pending``
        names the units.
    :raises ConfigError: no database, a bad URL or setting, a missing seeds module.
    :raises DefinitionError: a bad unit declaration, dependency or cycle.
    """
    if timeout is not None and timeout < 0:
        raise ConfigError(f"timeout must be 0 or more seconds, got {timeout!r}")
    from seedguard.binds import targets

    settings = _settings(bind, seeds=seeds, contexts=contexts)
    found = targets(settings, select_units(settings), bind_key=bind_key)
    started = time.monotonic()
    result = ApplyResult()
    for target in found:
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        with engine_for(target.settings) as engine:
            result.skipped.extend(_wait(engine, target.units, target.settings, left).skipped)
    return result


def _wait(engine: Engine, units: Sequence[SeedUnit], settings: _config.Settings,
          timeout: float | None) -> ApplyResult:
    from seedguard.alembic import RevisionGate
    from seedguard.ledger import Ledger
    from seedguard.planning import expected, look, plan

    ledger = Ledger.named(settings.ledger_table, settings.ledger_schema)
    checksums, rows = expected(units)
    gate = RevisionGate(settings, engine)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout

    def outstanding() -> list[str]:
        """The selected units not applied yet (pending, running, waiting); [] when ready."""
        seen = look(engine, ledger, rows)
        if seen is None:  # no ledger yet, or one an applier has still to upgrade
            return [unit.name for unit in units]
        if seen.all_applied:
            return []
        planned = plan(units, seen.state, checksums, revisions=gate, report=True)
        return [*(u.name for u in planned.pending), *(u.name for u in planned.blocked),
                *(w.name for w in planned.waiting), *(u.name for u in planned.stopped)]

    with _listener(engine, ledger) as heard:
        cap = LISTEN_POLL_CAP_SECONDS if heard is not None else POLL_CAP_SECONDS
        pause = FIRST_POLL_SECONDS
        looks = 0
        while True:
            left = outstanding() if units else []
            looks += 1
            if not left:
                log.info("ready: %d unit(s) applied (waited %.1f s, %d look(s))", len(units),
                         time.monotonic() - started, looks)
                return ApplyResult(skipped=list(units))
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(
                    f"timed out after {now - started:.1f} s waiting for {len(left)} unit(s) "
                    f"to be applied ({_names(left)}); is an applier running? Apply them "
                    "with `seedguard upgrade` (or apply()), or wait longer (--timeout)",
                    pending=left, timeout=timeout,
                )
            sleep = pause if deadline is None else min(pause, deadline - now)
            if heard is not None:
                heard(sleep)
            else:
                time.sleep(sleep)
            pause = min(pause * 2, cap)


def _names(names: Sequence[str], shown: int = 5) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@contextlib.contextmanager
def _listener(engine: Engine, ledger: Ledger) -> Iterator[Callable[[float], None] | None]:
    """A function that blocks until a notification on the ledger's channel or a
    timeout, on a connection of its own; None where the database has no channel
    or the driver cannot wait on one."""
    from seedguard.notify import channel, notifier

    if not notifier(engine.dialect.name).can_listen:
        yield None
        return
    from sqlalchemy import text

    from seedguard.connect import connect

    with connect(engine) as conn:
        dbapi: Any = conn.connection.dbapi_connection
        fileno = getattr(dbapi, "fileno", None)
        if not callable(fileno) or not (hasattr(dbapi, "poll") or hasattr(dbapi, "pgconn")):
            yield None  # asyncpg behind the sync facade, pg8000, ...: poll instead
            return
        conn.execution_options(isolation_level="AUTOCOMMIT")
        # LISTEN before the first look: a commit between the look and the
        # LISTEN would otherwise go unheard until the fallback poll.
        conn.execute(text(f'LISTEN "{channel(ledger)}"'))

        def heard(seconds: float) -> None:
            readable, _, _ = select.select([fileno()], [], [], max(seconds, 0.0))
            if readable:
                _drain(dbapi)

        try:
            yield heard
        finally:
            # The connection goes back to a pool that may be the app's own.
            with contextlib.suppress(Exception):
                conn.execute(text("UNLISTEN *"))


def _drain(dbapi: Any) -> None:
    """Read the notifications that arrived, so the socket is quiet until the next one."""
    if hasattr(dbapi, "pgconn"):  # psycopg 3
        dbapi.pgconn.consume_input()
        while dbapi.pgconn.notifies() is not None:
            pass
    else:  # psycopg2
        dbapi.poll()
        dbapi.notifies.clear()
