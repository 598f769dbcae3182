"""One ordered sequence of events per room, whichever node a change happened on.

Room events are written to the outbox on the topic `live:{slug}` (in the transaction of the change they
describe, or a transaction of their own), so the bus numbers them in commit order. Every node subscribes to
the topic of each room it has sockets in and delivers each event to its own sockets only (`ignore_queue`:
Socket.IO's Redis manager does not copy it to other nodes, which deliver it themselves); the event's seq is
the room's sequence number on every node. A bus Resync (a gap, a Redis restart) becomes a `resync` event to
the room's sockets, which join again from a new snapshot.

Each node also subscribes to the commerce topic `room:{slug}` (stock changes, checkout events, show end);
those go to `on_commerce`, never straight to clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from sqlalchemy.ext.asyncio import AsyncSession

from bus import Bus, Event, Resync, emit, topic_seq
from bus.base import Subscription
from signaling.backpressure import BoundedServer
from store import Database, clock

logger = logging.getLogger(__name__)

RING = 512
"""Recent events kept per room, replayed to a socket whose snapshot is older than what the node delivered."""
RESYNC = "resync"


def live_topic(slug: str) -> str:
    """The bus topic of a room's client-facing events."""
    return f"live:{slug}"


def commerce_topic(slug: str) -> str:
    """The bus topic on which commerce and rooms announce a room's changes."""
    return f"room:{slug}"


def message(event: Event, slug: str) -> dict[str, Any]:
    """What a client receives for a room event."""
    return {"room": slug, **event.payload, "seq": event.seq, "server_time_ms": event.occurred_at}


async def publish(session: AsyncSession, slug: str, type: str, payload: dict[str, Any]) -> None:
    """Add a room event to the caller's write transaction."""
    await emit(session, live_topic(slug), type, payload)


@dataclass
class _Feed:
    slug: str
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ring: deque[Event] = field(default_factory=lambda: deque(maxlen=RING))
    last: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class RoomFeeds:
    """This node's subscriptions to the rooms its sockets are in."""

    def __init__(self, sio: socketio.AsyncServer, namespace: str, database: Callable[[], Database],
                 bus: Callable[[], Bus | None], socket_room: Callable[[str], str],
                 on_commerce: Callable[[str, Event | Resync], Awaitable[None]],
                 on_event: Callable[[str, Event], Awaitable[None]]) -> None:
        self.sio = sio
        self.namespace = namespace
        self._database = database
        self._bus = bus
        self._socket_room = socket_room
        self._on_commerce = on_commerce
        self._on_event = on_event
        self._feeds: dict[str, _Feed] = {}

    async def acquire(self, slug: str) -> None:
        """Make sure this node receives the room's events (once per joined socket; `release` undoes it)."""
        feed = self._feeds.get(slug)
        if feed is None:
            feed = self._feeds[slug] = _Feed(slug)
            feed.users += 1
            try:
                await self._start(feed)
            except BaseException:
                feed.users -= 1
                if feed.users == 0:
                    self._feeds.pop(slug, None)
                    await self._stop(feed)
                raise
            return
        feed.users += 1
        await feed.ready.wait()

    async def release(self, slug: str) -> None:
        feed = self._feeds.get(slug)
        if feed is None:
            return
        feed.users -= 1
        if feed.users <= 0:
            self._feeds.pop(slug, None)
            await self._stop(feed)

    async def close(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await self._stop(feed)

    async def _start(self, feed: _Feed) -> None:
        bus = self._bus()
        if bus is None:
            raise RuntimeError("the event bus is not running")
        async with self._database().read() as session:
            live_seq = await topic_seq(session, live_topic(feed.slug))
            commerce_seq = await topic_seq(session, commerce_topic(feed.slug))
        feed.last = live_seq
        live = bus.subscribe(live_topic(feed.slug), after_seq=live_seq)
        commerce = bus.subscribe(commerce_topic(feed.slug), after_seq=commerce_seq)
        feed.subscriptions = [live, commerce]
        feed.tasks = [asyncio.create_task(self._deliver(feed, live), name=f"room-feed:{feed.slug}"),
                      asyncio.create_task(self._commerce(feed, commerce), name=f"room-commerce:{feed.slug}")]
        feed.ready.set()

    async def _stop(self, feed: _Feed) -> None:
        for subscription in feed.subscriptions:
            await subscription.close()
        for task in feed.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        feed.ready.set()

    async def _deliver(self, feed: _Feed, subscription: Subscription) -> None:
        async for item in subscription:
            try:
                async with feed.lock:
                    if isinstance(item, Resync):
                        feed.ring.clear()
                        feed.last = None
                        logger.warning("room feed resync", extra={"room": feed.slug, "reason": item.reason})
                        await self._send(RESYNC, {"room": feed.slug, "reason": item.reason,
                                                  "server_time_ms": clock.now_ms()}, feed.slug)
                        continue
                    feed.ring.append(item)
                    feed.last = item.seq
                    await self._send(item.type, message(item, feed.slug), feed.slug)
                if not isinstance(item, Resync):
                    await self._on_event(feed.slug, item)
            except Exception:
                logger.exception("room feed delivery failed", extra={"room": feed.slug})

    async def _send(self, event: str, data: dict[str, Any], slug: str) -> None:
        """To this node's sockets in the room only: the other nodes deliver the same event themselves."""
        if isinstance(self.sio, BoundedServer):
            self.sio.broadcast_local(event, data, self.namespace, self._socket_room(slug))
            await asyncio.sleep(0)  # let the sockets' writers take it before the next event is queued
        else:
            await self.sio.emit(event, data, room=self._socket_room(slug), namespace=self.namespace,
                                ignore_queue=True)

    async def _commerce(self, feed: _Feed, subscription: Subscription) -> None:
        async for item in subscription:
            try:
                await self._on_commerce(feed.slug, item)
            except Exception:
                logger.exception("room commerce event failed", extra={"room": feed.slug})

    async def enter(self, slug: str, sid: str, snapshot_seq: int) -> bool:
        """Put a socket into the room's delivery after it read a snapshot current to `snapshot_seq`: events
        this node delivered since are replayed to it first, so it misses none. False if the node's memory no
        longer covers them (the client then resyncs at once)."""
        feed = self._feeds[slug]
        async with feed.lock:
            missed = [event for event in feed.ring if event.seq > snapshot_seq]
            covered = feed.last is None or feed.last <= snapshot_seq or (
                bool(missed) and missed[0].seq == snapshot_seq + 1)
            for event in missed if covered else ():
                await self.sio.emit(event.type, message(event, slug), to=sid, namespace=self.namespace,
                                    ignore_queue=True)
            await self.sio.enter_room(sid, self._socket_room(slug), namespace=self.namespace)
        return covered

    def rooms(self) -> list[str]:
        return list(self._feeds)
