"""The per-host lock: an exclusive ``flock`` on a file, with a holder record beside it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from seedguard.errors import ConfigError, LockTimeout
from seedguard.locks.deadline import Deadline, describe_holder, holder_record
from seedguard.redact import without_secrets

if TYPE_CHECKING:
    import filelock
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

# Lock and holder files are private to the account: another one could
# otherwise read who holds the lock, or hold a lock file of ours open.
FILE_MODE = 0o600
# O_NOFOLLOW: a symlink planted at the name fails the open (ELOOP) instead of
# pointing the write at a file of the planter's choosing.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_HOLDER_MAX_BYTES = 4096

# filelock polls a non-blocking flock; its 50 ms default would add up to 50 ms
# per hand-over, which dominates a contended start-up (bench/contention.py).
FILE_LOCK_POLL_SECONDS = 0.005


def default_lock_path(url: URL, schema: str | None = None) -> Path:
    """Beside a SQLite database file, else in a private temp dir keyed by the URL.

    A SQLite file's lock is named after the file itself (symlinks, ``./`` and
    ``..`` resolved, ``file:`` URIs decoded), so every spelling of one file
    meets on one lock.

    For a server the key hashes the URL without its password, so changing a
    password does not split the lock, and no password reaches the file
    system. It stays the URL's text, not the server's identity of the
    ledger, because this path is needed before anything is asked of the
    server: reading the identity first would cost the locked path a
    connection before the file lock. That is safe: the file lock only orders
    the appliers of one host, and two spellings of one database (which split
    it) still meet on the database lock, whose key comes from the server.
    """
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            return path.with_name(path.name + ".seedguard.lock")
    # Without password or secret parameters: for a URL that has none this is
    # the text earlier releases hashed, so their locks and ours still meet.
    # A ledger in a schema of its own (a tenant: seedguard.Schema) gets a file
    # lock of its own, so the appliers of one host apply to several schemas
    # of one server side by side; the database lock is per schema already.
    text = without_secrets(url) + (f"#{schema}" if schema else "")
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    return private_lock_dir() / f"{key}.lock"


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL opens, canonical; None for an in-memory database.

    SQLAlchemy passes ``sqlite:///file:...?uri=true`` to SQLite as a URI
    (https://www.sqlite.org/uri.html): a ``file:`` scheme, an optional empty
    or ``localhost`` authority, a percent-encoded path, and query parameters
    (``mode=memory`` makes it in-memory).
    """
    database = str(url.database or "")
    is_uri = str(url.query.get("uri", "")).lower() in ("true", "1")
    if is_uri or database.startswith("file:"):
        if str(url.query.get("mode", "")) == "memory":
            return None
        if database.startswith("file:"):
            database = database[len("file:"):]
        database = database.split("?", 1)[0].split("#", 1)[0]
        if database.startswith("//"):
            authority, _, rest = database[2:].partition("/")
            if authority not in ("", "localhost"):
                return None  # a remote authority: SQLite itself refuses it
            database = "/" + rest
        database = urllib.parse.unquote(database)
    if database in ("", ":memory:"):
        return None
    return Path(os.path.realpath(database))


def private_lock_dir() -> Path:
    """``$TMPDIR/seedguard-<uid>``, created 0700 and refused if anyone else owns it.

    A world-writable shared directory would let another account create (and
    hold forever) the lock file every user's applier waits on.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(tempfile.gettempdir()) / f"seedguard-{uid}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
    except OSError as err:
        raise ConfigError(f"cannot create lock directory {directory}: {err.strerror}; "
                          "set SEEDGUARD_LOCK_PATH or lock_path=") from err
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise ConfigError(
            f"lock directory {directory} is not a directory owned by you; remove it or set "
            "SEEDGUARD_LOCK_PATH / lock_path= to a path of your own"
        )
    if stat.S_IMODE(info.st_mode) & 0o022:
        # Ours but writable by others: they may already have planted a lock
        # file, holder record or symlink in it, which closing it now would
        # not undo; the person who opened it decides what to keep.
        raise ConfigError(
            f"lock directory {directory} is writable by other users; check what is in it, "
            f"then `chmod 700 {directory}` (or remove it), or set SEEDGUARD_LOCK_PATH / "
            "lock_path= to a path of your own"
        )
    if stat.S_IMODE(info.st_mode) & 0o055:
        # Readable by others only (a permissive umask when it was made): the
        # holder records name our pids; close it.
        try:
            directory.chmod(0o700)
        except OSError as err:
            raise ConfigError(f"lock directory {directory} is readable by other users and "
                              f"cannot be made private: {err.strerror}; set "
                              "SEEDGUARD_LOCK_PATH or lock_path=") from err
    return directory


class FileLock:
    """An exclusive ``filelock.FileLock`` with a holder record written beside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self._lock: object | None = None

    def acquire(self, deadline: Deadline) -> bool:
        """Take the lock; True if another process held it and this one had to wait."""
        import filelock

        self._check_path()
        timeout = deadline.remaining()
        lock = filelock.FileLock(str(self.path), timeout=-1 if timeout is None else timeout,
                                 mode=FILE_MODE)
        # Under apply_async() the wait must not block the event loop: poll, and
        # sleep between polls on the loop (seedguard.eventloop.loop_sleep).
        from seedguard.eventloop import loop_sleep

        sleep = loop_sleep()
        waited = False
        try:
            try:
                lock.acquire(blocking=False)
            except filelock.Timeout:
                waited = True
                if sleep is None:
                    lock.acquire(poll_interval=FILE_LOCK_POLL_SECONDS)
                else:
                    _acquire_polling(lock, deadline, sleep)
        except filelock.Timeout as err:
            holder = describe_holder(self._read_holder())
            raise LockTimeout(
                f"timed out after {deadline.elapsed():.1f} s ({deadline.describe()}) waiting "
                f"for the file lock {self.path}, held by {holder}; wait for it to finish or "
                "raise {lock_timeout}",
                lock=str(self.path), holder=holder, settings=("lock_timeout",),
            ) from err
        except OSError as err:
            raise ConfigError(
                f"cannot create the lock file {self.path}: {err.strerror or err}; make its "
                "directory writable or set SEEDGUARD_LOCK_PATH / {lock_path} elsewhere",
                settings=("lock_path",),
            ) from err
        self._lock = lock
        self._write_holder()
        return waited

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        with contextlib.suppress(OSError):
            self.holder_path.unlink()
        lock.release()  # type: ignore[attr-defined]

    def holder(self) -> dict[str, object] | None:
        """The current holder's record, if the lock is held (by anyone, including us)."""
        import filelock

        if not self.path.exists():
            return None
        probe = filelock.FileLock(str(self.path), timeout=0, mode=FILE_MODE)
        try:
            probe.acquire()
        except filelock.Timeout:
            return self._read_holder() or {}
        except OSError:
            return None
        probe.release()
        return None

    def _check_path(self) -> None:
        # Refuse, do not follow, a symlink: it could point the lock (which
        # filelock opens for writing) at any file the user can write.
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        except OSError as err:
            raise ConfigError(
                f"cannot create the lock file {self.path}: {err.strerror}; make its directory "
                "writable or set SEEDGUARD_LOCK_PATH / lock_path= elsewhere"
            ) from err
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"lock path {self.path} is not a regular file; refusing to use it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise ConfigError(
                f"lock file {self.path} belongs to another user (uid {info.st_uid}); "
                "refusing to use it: set SEEDGUARD_LOCK_PATH / lock_path= to a path of your own"
            )

    def _write_holder(self) -> None:
        # Written aside and renamed into place, so a reader never sees half a
        # record. The aside name is predictable (<lock>.holder.<pid>): in a
        # shared directory another account can plant a symlink there, so it is
        # created new (O_EXCL) without following one (O_NOFOLLOW), owner-only.
        tmp = self.holder_path.with_name(self.holder_path.name + f".{os.getpid()}")
        data = json.dumps(holder_record()).encode()
        try:
            fd = _create_new(tmp)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            # rename() replaces whatever is at the final name (a symlink
            # included) without following it.
            os.replace(tmp, self.holder_path)
        except OSError as err:  # the record is a courtesy; the lock is what matters
            log.debug("could not write lock holder record %s: %s", self.holder_path, err)
            with contextlib.suppress(OSError):
                if stat.S_ISREG(tmp.lstat().st_mode) and tmp.lstat().st_uid == os.getuid():
                    tmp.unlink()

    def _read_holder(self) -> dict[str, object] | None:
        try:
            fd = os.open(self.holder_path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            record = json.loads(os.read(fd, _HOLDER_MAX_BYTES))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return record if isinstance(record, dict) else None


def _create_new(path: Path) -> int:
    """``path`` created owner-only for writing; whatever was left at that name is removed first.

    Left there: a record of a process of ours that died before renaming it
    (pids are reused), or a planted symlink or file; removing a name never
    follows it. If it is back by the second try, someone is racing us: give up.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    try:
        return os.open(path, flags, FILE_MODE)
    except FileExistsError:
        path.unlink()
        return os.open(path, flags, FILE_MODE)


def _acquire_polling(lock: filelock.FileLock, deadline: Deadline,
                     sleep: Callable[[float], None]) -> None:
    """filelock's wait (filelock.Timeout at the deadline), sleeping with ``sleep``."""
    import filelock

    while True:
        try:
            lock.acquire(blocking=False)
            return
        except filelock.Timeout:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise
            sleep(FILE_LOCK_POLL_SECONDS if remaining is None
                  else min(FILE_LOCK_POLL_SECONDS, remaining))
