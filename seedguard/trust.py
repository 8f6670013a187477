"""Which configuration files seedguard believes: git's ``safe.directory`` rule.

A ``pyproject.toml`` found by searching upwards, or an alembic config found
by default or named by such a file, decides what runs (contexts, seeds, the
``env.py`` executed with the database URL). On a shared host (a CI runner,
a jump box, a container with a world-writable workspace) another account
can plant one in a parent directory. So such a file is trusted only when it
is owned by the current user or by root; any other is ignored with a
warning that names it and says how to trust it. A file named explicitly
(an argument, a CLI option, a ``SEEDGUARD_*`` variable) is trusted as given:
whoever set it chose it.

The warning is a log record (logger ``seedguard.trust``), not a Python
warning: under ``-W error`` or pytest's ``filterwarnings = ["error"]`` a
warning would turn "ignored" into a crash of the caller. It is logged once
per file and owner in a process (``apply()`` may run at every start-up, and
the command line resolves its settings more than once).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_warned: set[tuple[str, int]] = set()


def trusted_owner(uid: int) -> bool:
    """Whether a file owned by ``uid`` may configure this process (the user or root)."""
    if not hasattr(os, "getuid"):  # Windows: no owners to compare
        return True
    return uid in (os.getuid(), 0)


def warn_untrusted(path: str | os.PathLike[str], uid: int, *, instead: str) -> None:
    """Log that ``path`` (owned by ``uid``) is ignored, and how to trust it.

    ``instead``: how to give the same settings explicitly.
    """
    key = (os.fspath(path), uid)
    if key in _warned:
        return
    _warned.add(key)
    me = os.getuid() if hasattr(os, "getuid") else 0
    log.warning(
        "ignoring %s: it is owned by uid %d, not by you (uid %d) or root, so another account "
        "could have written it; if you trust it, take ownership (`chown %d %s`), or %s",
        path, uid, me, me, path, instead,
    )


def is_trusted(path: str | os.PathLike[str], *, instead: str) -> bool:
    """``path``'s owner passes :func:`trusted_owner`; if not, warn (see :func:`warn_untrusted`).

    A file that cannot be inspected is left to the caller's own open() to report.
    """
    try:
        uid = Path(path).stat().st_uid
    except OSError:
        return True
    if trusted_owner(uid):
        return True
    warn_untrusted(path, uid, instead=instead)
    return False


__all__ = ["is_trusted", "trusted_owner", "warn_untrusted"]
