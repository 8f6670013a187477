"""The command line's exit codes, one place for every module of the CLI."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK = 3
EXIT_LOCK_TIMEOUT = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
