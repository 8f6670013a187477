"""The user's alembic upgrade in a Flask app with binds: once, under every bind's locks.

Flask-Migrate's ``--multidb`` template migrates every bind in one ``flask db
upgrade``: its ``env.py`` opens a connection to each bind's engine and runs
each revision's ``upgrade_<bind>()`` there. An ``env.py`` of one's own may
do the same. So with ``schema=True`` in an app with binds the upgrade runs
once, before any bind's units, while this applier holds the file and
database locks of every database of the app: another applier (a replica's
start-up, another bind's ``upgrade --schema``) waits for it instead of
racing alembic on one of the databases, and a second run finds the
databases at head. The units then run bind by bind, each under its own
database's locks again.

The locks are taken in one order (the default database, then the binds by
key) and seedguard never holds one bind's locks while it waits for another's
elsewhere, so two appliers cannot wait for each other.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Connection

    from seedguard.config import Settings


def covers_binds(settings: Settings) -> bool:
    """Whether the settings' database is that of a Flask app with binds (the user's
    upgrade then migrates more than the one database a run is on)."""
    from seedguard import flaskapp
    from seedguard.binds import app_of

    app = app_of(settings)
    return app is not None and len(flaskapp.engines(app)) > 1


def upgrade_every_bind(settings: Settings) -> list[str]:
    """Run the user's ``alembic upgrade head`` once, holding the locks of the app's default
    database and of each bind's; returns the revisions it applied, oldest first.

    :param settings: the run's settings (the app's default database).
    :raises LockTimeout: a lock was held for longer than ``lock_timeout`` (one
        deadline bounds every wait); nothing was migrated.
    :raises ConfigError: no alembic scripts, or alembic refused them.
    """
    from seedguard.alembic import upgrade_head
    from seedguard.binds import databases
    from seedguard.connect import connect
    from seedguard.context import locked_transaction
    from seedguard.locks import Deadline, ledger_locks
    from seedguard.redact import without_secrets

    deadline = Deadline(settings.lock_timeout)
    with contextlib.ExitStack() as stack:
        files: set[Path] = set()
        servers: set[str] = set()
        default: tuple[Settings, Connection, bool] | None = None
        for _, each in databases(settings):
            engine = each.engine
            assert engine is not None  # databases() gives each bind's engine
            file_lock, db_lock, _ = ledger_locks(engine, each)
            # One lock_path for every bind (lock_path=, SEEDGUARD_LOCK_PATH), or two
            # binds on one database: each lock once, or this process would wait for itself.
            if file_lock.path not in files:
                files.add(file_lock.path)
                file_lock.acquire(deadline)
                stack.callback(file_lock.release)
            where = without_secrets(engine.url)
            if where in servers:
                continue
            servers.add(where)
            db_lock.acquire(deadline)
            stack.callback(db_lock.release)
            conn = stack.enter_context(connect(engine))
            commit = stack.enter_context(locked_transaction(conn, db_lock, deadline))
            if default is None:
                default = (each, conn, commit)
        assert default is not None
        own, conn, commit = default
        assert own.engine is not None
        # Flask-Migrate's env.py connects through the app's engines itself; a
        # one-database env.py gets the default database's connection.
        return upgrade_head(own, own.engine, conn, commit=commit)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow
