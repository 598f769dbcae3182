"""Publish/subscribe for events: in-process or Redis Streams, fed by the transactional outbox."""

from bus.base import Bus, Subscription
from bus.event import Event, Resync
from bus.factory import create_bus
from bus.memory import MemoryBus
from bus.outbox import OutboxRelay, emit, topic_seq
from bus.redis_streams import RedisStreamBus, redis_client

__all__ = [
    "Bus",
    "Event",
    "MemoryBus",
    "OutboxRelay",
    "RedisStreamBus",
    "Resync",
    "Subscription",
    "create_bus",
    "emit",
    "redis_client",
    "topic_seq",
]
