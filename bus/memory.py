"""The in-process bus: enough for one node, with a bounded per-topic history for reconnecting subscribers."""

from __future__ import annotations

import logging
from collections import deque

from bus.base import Bus, Subscription
from bus.event import Event, Resync
from bus.subscription import QueueSubscription

logger = logging.getLogger(__name__)


class _MemorySubscription(QueueSubscription):
    def __init__(self, bus: MemoryBus, topic: str, after_seq: int | None, max_queued: int) -> None:
        super().__init__(topic, after_seq, max_queued)
        self._bus = bus

    async def _release(self) -> None:
        self._bus._forget(self)


class MemoryBus(Bus):
    """Publishing hands each event to every subscriber's queue at once; nothing leaves the process."""

    def __init__(self, history: int = 1000, max_queued: int = 10_000) -> None:
        self.history = history
        self.max_queued = max_queued
        self._history: dict[str, deque[Event]] = {}
        self._last_seq: dict[str, int] = {}
        self._subscribers: dict[str, set[_MemorySubscription]] = {}

    async def publish(self, event: Event) -> None:
        last = self._last_seq.get(event.topic)
        if last is not None and event.seq <= last:
            return  # a repeat from the at-least-once relay: every subscriber would drop it anyway
        self._last_seq[event.topic] = event.seq
        if self.history:
            self._history.setdefault(event.topic, deque(maxlen=self.history)).append(event)
        for subscription in list(self._subscribers.get(event.topic, ())):
            subscription.offer(event)

    def subscribe(self, topic: str, after_seq: int | None = None) -> Subscription:
        subscription = _MemorySubscription(self, topic, after_seq, self.max_queued)
        last = self._last_seq.get(topic)
        if after_seq is not None and last is not None and after_seq < last:
            retained = [event for event in self._history.get(topic, ()) if event.seq > after_seq]
            if not retained:
                subscription.offer(Resync(topic, f"history no longer holds events after {after_seq}"))
            # A retained history that starts past after_seq + 1 is a gap the guard turns into a Resync.
            for event in retained:
                subscription.offer(event)
        self._subscribers.setdefault(topic, set()).add(subscription)
        return subscription

    async def ping(self) -> None:
        """Always ready: nothing outside the process is involved."""

    async def close(self) -> None:
        for subscriptions in list(self._subscribers.values()):
            for subscription in list(subscriptions):
                await subscription.close()

    def _forget(self, subscription: _MemorySubscription) -> None:
        subscriptions = self._subscribers.get(subscription.topic)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscribers[subscription.topic]
