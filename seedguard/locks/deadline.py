"""The one time budget every wait of an operation shares, and who holds a lock."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time


class Deadline:
    """One time budget shared by every wait of an operation; ``None`` waits forever."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())


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
