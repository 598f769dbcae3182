"""The server clock. Times are integer milliseconds since the Unix epoch (UTC) everywhere: in the database,
in events and in what clients receive, so deadlines compare the same on every backend and screen."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
