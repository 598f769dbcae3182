"""The bus across nodes: one Redis stream per topic, read with blocking XREAD by each subscription.

Redis is a relay, not the record: the outbox in the database is. So a Redis that restarts empty costs
subscribers a Resync (they reload from the database), and events not yet published wait in the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT, FieldT

from bus.base import Bus, Subscription
from bus.event import Event, Resync
from bus.subscription import QueueSubscription
from bus.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

KEY_PREFIX = "pinstream:events:"
# A dead Redis must show up as an error within seconds, so the relay retries and subscribers reconnect.
SOCKET_TIMEOUT_SECONDS = 3.0
CONNECT_TIMEOUT_SECONDS = 2.0


def stream_key(topic: str) -> str:
    return f"{KEY_PREFIX}{topic}"


def encode(event: Event) -> dict[FieldT, EncodableT]:
    """Stream entry fields; the topic is the stream itself."""
    return {"seq": event.seq, "type": event.type, "occurred_at": event.occurred_at, "id": event.id,
            "payload": json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)}


def decode(topic: str, fields: Mapping[str, str]) -> Event:
    return Event.from_dict({"topic": topic, "seq": fields["seq"], "type": fields["type"],
                            "payload": json.loads(fields["payload"]), "occurred_at": fields["occurred_at"],
                            "id": fields["id"]})


def _entries(response: Any) -> list[tuple[str, dict[str, str]]]:
    """(id, fields) pairs of a single-stream XREAD or XRANGE reply, in either protocol's shape."""
    if isinstance(response, dict):
        streams: list[Any] = list(response.values())
    elif response and isinstance(response[0], list | tuple) and len(response[0]) == 2 \
            and isinstance(response[0][1], list):
        streams = [entries for _key, entries in response]
    else:
        streams = [response]
    return [(str(entry_id), dict(fields)) for entries in streams for entry_id, fields in entries or ()]


def redis_client(url: str, password: str | None, **options: Any) -> Redis:
    """A client that reports a dead Redis within seconds rather than hanging (the bus, the rate limits)."""
    if password is not None:
        options["password"] = password
    return Redis.from_url(url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                          **options)


class _StreamSubscription(QueueSubscription):
    """A reader task on its own connection. Its own connection, without silent retries, so that a Redis
    restart always surfaces as an error here and is followed by the run_id comparison."""

    def __init__(self, bus: RedisStreamBus, topic: str, after_seq: int | None) -> None:
        super().__init__(topic, after_seq, bus.max_queued)
        self._bus = bus
        # after_seq: replay the whole retained stream and let the guard skip what the subscriber has.
        self._position: str | None = None if after_seq is None else "0-0"
        self._run_id: str | None = None
        self._task = asyncio.create_task(self._read(), name=f"bus-subscription:{topic}")

    async def _release(self) -> None:
        await cancel_and_wait(self._task)
        self._bus._forget(self)

    async def _read(self) -> None:
        bus = self._bus
        client = redis_client(bus.url, bus.password, single_connection_client=True,
                              socket_timeout=bus.block_ms / 1000 + SOCKET_TIMEOUT_SECONDS,
                              retry=Retry(NoBackoff(), 0))
        backoff = bus.min_backoff
        failing = False
        try:
            while not self.closed:
                try:
                    await self._check_server(client)
                    if failing:
                        bus._reader_recovered()
                        failing, backoff = False, bus.min_backoff
                    await self._read_entries(client)
                except Exception as exc:
                    if not failing:
                        bus._reader_failed(self.topic, exc)
                        failing = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, bus.max_backoff)
        finally:
            await client.aclose()

    async def _check_server(self, client: Redis) -> None:
        """On every (re)connection: a new run_id means Redis restarted and its streams may be gone."""
        info = await client.info("server")
        run_id = str(info["run_id"])
        if self._run_id is not None and run_id != self._run_id:
            self._bus._server_restarted(run_id)
            await self.put(Resync(self.topic, "redis restarted"))
            self._position = "0-0"
        self._run_id = run_id
        if self._position is None:
            newest = _entries(await client.xrevrange(stream_key(self.topic), count=1))
            self._position = newest[0][0] if newest else "0-0"

    async def _read_entries(self, client: Redis) -> None:
        key = stream_key(self.topic)
        bus = self._bus
        while not self.closed:
            assert self._position is not None
            response = await client.xread({key: self._position}, count=bus.read_batch, block=bus.block_ms)
            for entry_id, fields in _entries(response):
                self._position = entry_id
                try:
                    if self._guard.last is not None and int(fields["seq"]) <= self._guard.last:
                        continue  # replaying what the subscriber already has: skip before parsing JSON
                    event = decode(self.topic, fields)
                except (KeyError, TypeError, ValueError) as exc:
                    logger.error("skipping malformed entry %s on %s: %s", entry_id, key, exc)
                    continue
                await self.put(event)


class RedisStreamBus(Bus):
    """Events of a topic in the stream `pinstream:events:{topic}`, trimmed to about `stream_max_length`."""

    def __init__(self, url: str, password: str | None = None, stream_max_length: int = 10_000, *,
                 block_ms: int = 1000, read_batch: int = 500, max_queued: int = 1000,
                 min_backoff: float = 0.05, max_backoff: float = 2.0) -> None:
        self.url = url
        self.password = password
        self.stream_max_length = stream_max_length
        self.block_ms = block_ms
        self.read_batch = read_batch
        self.max_queued = max_queued
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # One immediate retry replaces a pooled connection that died with a restarted Redis; a Redis that
        # is really down makes publish raise at once, and the outbox relay backs off and retries.
        self._client = redis_client(url, password, socket_timeout=SOCKET_TIMEOUT_SECONDS,
                                    retry=Retry(NoBackoff(), 1))
        self._subscriptions: set[_StreamSubscription] = set()
        # Subscriptions fail and recover together; these keep the log to one line per outage or restart.
        self._readers_failing = False
        self._restart_logged: str | None = None

    async def publish(self, event: Event) -> None:
        await self._client.xadd(stream_key(event.topic), encode(event), maxlen=self.stream_max_length,
                                approximate=True)

    def subscribe(self, topic: str, after_seq: int | None = None) -> Subscription:
        subscription = _StreamSubscription(self, topic, after_seq)
        self._subscriptions.add(subscription)
        return subscription

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._client.aclose()

    def _forget(self, subscription: _StreamSubscription) -> None:
        self._subscriptions.discard(subscription)

    def _reader_failed(self, topic: str, exc: Exception) -> None:
        if not self._readers_failing:
            self._readers_failing = True
            logger.warning("bus subscriptions lost Redis (%s: %s, first on %s); reconnecting",
                           type(exc).__name__, exc, topic)

    def _reader_recovered(self) -> None:
        if self._readers_failing:
            self._readers_failing = False
            logger.info("bus subscriptions reading from Redis again")

    def _server_restarted(self, run_id: str) -> None:
        if run_id != self._restart_logged:
            self._restart_logged = run_id
            logger.warning("Redis restarted (new run_id %s): its streams may be empty; subscribers resync",
                           run_id)
