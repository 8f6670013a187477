"""Every registered bulk writer passes the shared writer suite (tests/backends/writer_suite.py)."""

from __future__ import annotations

from backends.writer_suite import *  # noqa: F403
