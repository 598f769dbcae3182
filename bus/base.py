"""The bus interface, so the rest of the server does not care whether events cross processes or not.

Contract of every implementation, per topic and per subscription:
- events arrive in seq order, each at most once (seq at or below the last delivered is dropped);
- a jump in seq yields a `Resync` before the event that follows the jump;
- with `after_seq`, events with seq > after_seq that the bus still holds are replayed first, preceded by a
  `Resync` when the bus knows some of them are gone (trimmed); when the bus has seen nothing past after_seq
  there is nothing to replay and no Resync;
- with `after_seq=None`, delivery starts with the events published from about now on (the in-process bus
  from the call itself, the Redis bus from when its reader first reaches Redis); callers that must not miss
  anything load a snapshot with its seq and pass that seq as `after_seq`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from bus.event import Event, Resync


class Subscription(ABC):
    """An async iterator of `Event | Resync` on one topic; ends once `close()` has been called."""

    topic: str

    def __aiter__(self) -> Subscription:
        return self

    @abstractmethod
    async def __anext__(self) -> Event | Resync: ...

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving and free what the subscription holds; safe to call twice."""

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()


class Bus(ABC):
    """Publish/subscribe of events by topic."""

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Hand `event` to the bus; raises if it could not be handed over, so the outbox relay retries."""

    @abstractmethod
    def subscribe(self, topic: str, after_seq: int | None = None) -> Subscription:
        """Start receiving events of `topic` (call from inside the running event loop)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the bus cannot carry events now (the readiness check)."""

    @abstractmethod
    async def close(self) -> None:
        """Close every subscription and connection."""
