"""``-v`` and ``-q``: seedguard's log records on stderr for one command, or not even
its warnings."""

from __future__ import annotations

import functools
import logging
import sys

import click

from seedguard.cli.options import Options


class _AlembicChatter(logging.Filter):
    """Drops alembic's INFO records ("Context impl PostgresqlImpl.", "Will assume
    transactional DDL.", "Running upgrade ...", "setup plugin ...") below -v.

    The user's env.py turns them on for the ``alembic`` command (``fileConfig``
    of alembic.ini, with the ``alembic`` logger at INFO); ``upgrade --schema``
    says itself which revisions it applied, and with nothing to do they are
    noise, as they are when seedguard creates its ledger with alembic and the
    app logs at INFO. A filter on the loggers that emit them, because
    ``fileConfig`` resets the levels and handlers of the loggers it configures
    and of their children, not a child's filters.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_ALEMBIC_CHATTER = _AlembicChatter()
_ALEMBIC_LOGGERS = ("alembic.runtime.migration", "alembic.runtime.plugins")


class _RedactingFormatter(logging.Formatter):
    """A log line (and its traceback) with the command's URL secrets hidden."""

    def __init__(self, ctx: click.Context, fmt: str) -> None:
        super().__init__(fmt)
        self._ctx = ctx

    def format(self, record: logging.LogRecord) -> str:
        opts = self._ctx.find_object(Options) or Options()
        return opts.redact(super().format(record))


def configure_logging(ctx: click.Context, *, verbose: bool, quiet: bool = False) -> None:
    """With -v, log seedguard's INFO records to stderr for this command only; with -q,
    not even its warnings (Python prints those to stderr when no handler is set).
    Below -v, alembic's INFO records are dropped (:class:`_AlembicChatter`)."""
    for name in _ALEMBIC_LOGGERS:
        chatter = logging.getLogger(name)
        if verbose:
            chatter.removeFilter(_ALEMBIC_CHATTER)
        elif _ALEMBIC_CHATTER not in chatter.filters:
            chatter.addFilter(_ALEMBIC_CHATTER)
            ctx.call_on_close(functools.partial(chatter.removeFilter, _ALEMBIC_CHATTER))
    if not verbose and not quiet:
        return
    logger = logging.getLogger("seedguard")
    level = logger.level
    handler: logging.Handler | None = None
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RedactingFormatter(ctx, "%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.ERROR)

    def restore() -> None:
        # The group may run in a longer-lived process (flask's CLI runner, tests).
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)
