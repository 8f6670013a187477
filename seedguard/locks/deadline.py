"""The one time budget every wait of an operation shares, and who holds a lock."""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import time


class Deadline:
    """One time budget shared by every wait of an operation.

    ``seconds`` is ``None`` or ``inf`` to wait forever, else any number >= 0
    (the configuration refuses the rest); each backend clamps what its
    server cannot express.
    """

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and math.isinf(seconds):
            seconds = None
        self.seconds = seconds
        self._start = time.monotonic()
        self._end = None if seconds is None else self._start + seconds

    def remaining(self) -> float | None:
        """Seconds left, or None when there is no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def elapsed(self) -> float:
        """Seconds since the budget started: what a timeout message reports as waited."""
        return time.monotonic() - self._start

    def describe(self) -> str:
        """The limit, for messages: ``lock_timeout 30 s`` or ``no lock_timeout``."""
        return "no lock_timeout" if self.seconds is None else f"lock_timeout {self.seconds:g} s"


def holder_record() -> dict[str, object]:
    """Who we are, for the message another applier shows when it times out."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe_holder(record: dict[str, object] | None) -> str:
    if not record:
        return "an unknown holder"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"
