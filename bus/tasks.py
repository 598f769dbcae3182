"""Stopping background tasks reliably on Python 3.11.

There `asyncio.wait_for` (which redis-py uses around socket writes) can swallow a cancellation that arrives
just as the awaited operation completes, leaving a "cancelled" task running. So cancel until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib

RECANCEL_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end, cancelling again if a cancellation got lost."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
