"""Which bus a node uses follows from the settings alone: Redis when configured, else in-process."""

from __future__ import annotations

from bus.base import Bus
from bus.memory import MemoryBus
from bus.redis_streams import RedisStreamBus
from config.schema import Settings


def create_bus(settings: Settings, redis_password: str | None = None) -> Bus:
    """Several nodes need Redis to see each other's events; one node does without."""
    if settings.redis.url:
        return RedisStreamBus(settings.redis.url, redis_password, settings.redis.stream_max_length)
    return MemoryBus(settings.events.replay_history)
