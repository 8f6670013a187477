"""A cache of code checksums on disk, so a fresh process does not re-parse unchanged seed files.

A start-up with 1,000 applied units spent most of its first ``apply()`` parsing
and serialising syntax trees that had not changed since the last start
(bench/noop.py). This cache keeps, per source file, the checksum of every
function in it, under a key made of

- the hash of the file's bytes (not its mtime: a checkout, ``touch`` or a
  copied image changes mtimes without changing code, and an edit within the
  mtime's resolution changes code without changing it),
- the checksum algorithm and this cache's format, and
- the interpreter (``sys.implementation.cache_tag``), so an entry only ever
  returns what hashing the same bytes would return on this Python.

Where: the user cache directory (``$XDG_CACHE_HOME/seedguard/checksums``, by
default ``~/.cache/seedguard/checksums``; ``~/Library/Caches`` on macOS,
``%LOCALAPPDATA%`` on Windows), one small JSON file per source path. Not a
``__pycache__`` file beside the module: images and CI machines commonly set
``PYTHONDONTWRITEBYTECODE`` (this project's own machines do) to keep the source
tree free of generated files, which would either switch the cache off there or
ignore what the user asked for; installed seed packages sit in a site-packages
that the app's user often cannot write; and one entry per path, overwritten on
change, keeps the directory bounded. Entries not rewritten for 30 days are
pruned when a new one is made. The whole directory is safe to delete.

The cache is never required: an unwritable or missing directory (a read-only
home, a container without one, ``HOME`` unset) or a corrupt, truncated or
foreign entry only means the checksums are computed as without it. Nothing is
raised, warned or printed; one debug log line per process says why it is off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = 1
"""Raise when the entry layout changes; entries of another format are misses."""

MAX_AGE_SECONDS = 30 * 24 * 3600

_disabled_reason_logged = False


def cache_dir() -> Path | None:
    """Where entries live, or None when there is no user cache directory."""
    try:
        if sys.platform == "win32":
            base = os.environ.get("LOCALAPPDATA")
            root = Path(base) if base else Path.home() / "AppData" / "Local"
        elif sys.platform == "darwin":
            root = Path.home() / "Library" / "Caches"
        else:
            # The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
            base = os.environ.get("XDG_CACHE_HOME", "")
            root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    except (RuntimeError, KeyError, OSError):  # no home directory can be determined
        return None
    return root / "seedguard" / "checksums"


def source_digest(data: bytes) -> str:
    """The key part that stands for a source file's content."""
    return hashlib.sha256(data).hexdigest()


def entry_path(directory: Path, filename: str) -> Path:
    """One entry per source path (and interpreter), overwritten when the source changes."""
    tag = sys.implementation.cache_tag or sys.implementation.name
    named = hashlib.sha256(os.fsencode(filename)).hexdigest()[:32]
    return directory / f"{named}.{tag}.json"


def load(filename: str, digest: str, algorithm: str) -> dict[str, str] | None:
    """The cached checksums of ``filename`` whose bytes hash to ``digest``, or None (a miss)."""
    directory = cache_dir()
    if directory is None:
        return None
    path = entry_path(directory, filename)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):  # missing, unreadable, not UTF-8
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        log.debug("checksum cache entry %s is corrupt; recomputing", path)
        return None
    if not _valid(entry, filename, digest, algorithm):
        return None
    checksums: dict[str, str] = entry["checksums"]
    return checksums


def store(filename: str, digest: str, algorithm: str, checksums: Mapping[str, str]) -> None:
    """Write the entry atomically; any failure leaves the cache as it was, silently."""
    directory = cache_dir()
    if directory is None:
        _off("no user cache directory")
        return
    path = entry_path(directory, filename)
    entry = {
        "format": FORMAT,
        "algorithm": algorithm,
        "python": sys.implementation.cache_tag,
        "path": filename,
        "source": digest,
        "checksums": dict(checksums),
    }
    # A unique temporary name, then os.replace: a concurrent reader sees the
    # old entry or the new one, never half of one (gunicorn workers, CI jobs).
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        new = not path.exists()
        directory.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(entry, separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as err:
        _off(f"{directory} is not writable ({type(err).__name__})")
        with contextlib.suppress(OSError):
            temporary.unlink()
        return
    if new:
        _prune(directory, keep=path)


def _valid(entry: object, filename: str, digest: str, algorithm: str) -> bool:
    if not isinstance(entry, dict):
        return False
    if (entry.get("format"), entry.get("algorithm"), entry.get("python"), entry.get("path"),
            entry.get("source")) != (FORMAT, algorithm, sys.implementation.cache_tag, filename,
                                     digest):
        return False
    checksums = entry.get("checksums")
    prefix = f"{algorithm}:"
    return isinstance(checksums, dict) and all(
        isinstance(key, str) and isinstance(value, str) and value.startswith(prefix)
        for key, value in checksums.items()
    )


def _prune(directory: Path, *, keep: Path) -> None:
    # Only when an entry is added, so the directory is listed once per new
    # source path, not at every start-up.
    cutoff = time.time() - MAX_AGE_SECONDS
    try:
        with os.scandir(directory) as found:
            for item in found:
                if item.path == str(keep):
                    continue
                try:
                    if item.stat().st_mtime < cutoff:
                        os.unlink(item.path)
                except OSError:
                    continue
    except OSError:
        return


def _off(reason: str) -> None:
    global _disabled_reason_logged
    if not _disabled_reason_logged:
        _disabled_reason_logged = True
        log.debug("checksum cache off: %s; checksums are computed at each start-up", reason)
