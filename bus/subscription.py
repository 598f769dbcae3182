"""A subscription fed through a bounded queue, shared by the bus implementations."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from bus.base import Subscription
from bus.event import Event, Resync
from bus.sequence import SequenceGuard

logger = logging.getLogger(__name__)


class _Closed:
    """Queued by `close()` to end an iteration that is waiting."""


_CLOSED = _Closed()

QueueItem = Event | Resync | _Closed


class QueueSubscription(Subscription):
    """Producers queue raw events (and Resyncs they detect); the consumer side applies the SequenceGuard, so
    ordering and de-duplication are decided in one place whatever fills the queue."""

    def __init__(self, topic: str, after_seq: int | None, max_queued: int) -> None:
        self.topic = topic
        self._guard = SequenceGuard(topic, after_seq)
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue(max(1, max_queued))
        self._ready: deque[Event | Resync] = deque()
        self.closed = False

    def offer(self, item: Event | Resync) -> None:
        """Queue without waiting. A full queue means the subscriber fell behind: its backlog is dropped for a
        Resync, so a slow subscriber neither blocks the publisher nor grows memory without bound."""
        if self.closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._drop_backlog()
            self._queue.put_nowait(Resync(self.topic, "subscriber fell behind"))
            logger.warning("subscriber on %s fell behind by %d events; it will resync",
                           self.topic, self._queue.maxsize)

    async def put(self, item: Event | Resync) -> None:
        """Queue, waiting for room: for producers that can pause and read on later without losing events."""
        if not self.closed:
            await self._queue.put(item)

    async def __anext__(self) -> Event | Resync:
        while not self._ready:
            if self.closed:
                raise StopAsyncIteration
            item = await self._queue.get()
            if isinstance(item, _Closed):
                raise StopAsyncIteration
            if isinstance(item, Resync):
                self._guard.resynced()
                return item
            self._ready.extend(self._guard.accept(item))
        return self._ready.popleft()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_backlog()
        self._queue.put_nowait(_CLOSED)
        await self._release()

    async def _release(self) -> None:
        """Subclasses free their producer side here."""

    def _drop_backlog(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
