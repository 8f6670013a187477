"""Every registered database lock passes the shared lock suite (tests/backends/lock_suite.py)."""

from __future__ import annotations

from backends.lock_suite import *  # noqa: F403
