"""The event bus on real servers: order and replay on both buses, the outbox relay on SQLite and PostgreSQL,
a crash between commit and publish, a Redis that restarts empty, and two relays on one database."""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select, update

from bus import (
    Bus,
    Event,
    MemoryBus,
    OutboxRelay,
    RedisStreamBus,
    Resync,
    Subscription,
    create_bus,
    emit,
    topic_seq,
)
from config.schema import DatabaseSettings, EventsSettings, RedisSettings, Settings
from store import Database, migrate, now_ms
from store.models import OutboxEvent
from tests.servers import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
FAST = EventsSettings(relay_interval_ms=50)
Item = Event | Resync


def event(topic: str, seq: int, payload: dict[str, object] | None = None) -> Event:
    return Event(topic=topic, seq=seq, type="test", payload=payload or {}, occurred_at=now_ms(), id=seq)


def seqs(items: list[Item]) -> list[int | None]:
    """Seq of each event, None for each Resync: one list says both order and where resyncs happened."""
    return [item.seq if isinstance(item, Event) else None for item in items]


async def take(subscription: Subscription, count: int, within: float = 5.0) -> list[Item]:
    """The next `count` items, failing the test if they do not come within `within` seconds."""
    async def collect() -> list[Item]:
        items: list[Item] = []
        async for item in subscription:
            items.append(item)
            if len(items) == count:
                break
        return items
    async with asyncio.timeout(within):
        return await collect()


async def take_until_seq(subscription: Subscription, seq: int, within: float = 5.0) -> list[Item]:
    """Items up to and including the event with `seq`."""
    async def collect() -> list[Item]:
        items: list[Item] = []
        async for item in subscription:
            items.append(item)
            if isinstance(item, Event) and item.seq >= seq:
                break
        return items
    async with asyncio.timeout(within):
        return await collect()


async def quiet(subscription: Subscription, seconds: float) -> list[Item]:
    """Whatever arrives within `seconds` (the tests expect nothing)."""
    items: list[Item] = []
    try:
        async with asyncio.timeout(seconds):
            async for item in subscription:
                items.append(item)
    except TimeoutError:
        pass
    return items


def make_bus(request: pytest.FixtureRequest, kind: str, size: int = 1000) -> Bus:
    """A bus of `kind` keeping about `size` events per topic for replay."""
    if kind == "memory":
        return MemoryBus(history=size)
    redis_url: str = request.getfixturevalue("redis_url")
    return RedisStreamBus(redis_url, stream_max_length=size, max_backoff=0.2)


BUS_KINDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BUS_KINDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    instance = make_bus(request, request.param)
    yield instance
    await instance.close()


@pytest.fixture
async def relay_for(db: Database) -> AsyncIterator[Callable[[Bus], OutboxRelay]]:
    """Starts relays on the test's database and stops them afterwards."""
    relays: list[OutboxRelay] = []

    def start(bus: Bus) -> OutboxRelay:
        relay = OutboxRelay(db, bus, FAST, max_backoff=0.2)
        relay.start()
        relays.append(relay)
        return relay
    yield start
    for relay in relays:
        await relay.stop()


async def emit_one(db: Database, topic: str, **payload: object) -> Event:
    async with db.write() as session:
        return await emit(session, topic, "test", payload)


async def unpublished(db: Database) -> int:
    async with db.read() as session:
        count = await session.scalar(select(func.count()).select_from(OutboxEvent)
                                     .where(OutboxEvent.published_at.is_(None)))
        return int(count or 0)


async def wait_all_published(db: Database, within: float = 5.0) -> None:
    """The relay marks events after publishing them, so a subscriber can see one before it is marked."""
    for _ in range(int(within / 0.02)):
        if not await unpublished(db):
            return
        await asyncio.sleep(0.02)
    pytest.fail("the outbox still holds unpublished events")


def test_event_round_trips_through_a_dict() -> None:
    original = Event(topic="room:1", seq=3, type="bid", payload={"amount": 1250, "by": "zoë"},
                     occurred_at=1_700_000_000_000, id=42)
    assert Event.from_dict(original.to_dict()) == original
    with pytest.raises(TypeError):
        Event.from_dict({**original.to_dict(), "payload": [1]})


async def test_events_arrive_in_seq_order_per_topic(bus: Bus) -> None:
    topics = [f"room:{n}" for n in range(4)]
    subscriptions = {topic: bus.subscribe(topic, after_seq=0) for topic in topics}
    per_topic = 150
    # Interleaved across topics, each topic's own events in seq order (as the outbox relay publishes).
    for seq, topic in itertools.product(range(1, per_topic + 1), topics):
        await bus.publish(event(topic, seq, {"topic": topic, "n": seq}))
    received = await asyncio.gather(*(take(subscriptions[topic], per_topic) for topic in topics))
    for topic, items in zip(topics, received, strict=True):
        assert seqs(items) == list(range(1, per_topic + 1))
        assert all(isinstance(item, Event) and item.topic == topic
                   and item.payload == {"topic": topic, "n": item.seq} for item in items)


async def test_live_subscription_starts_after_what_was_published(bus: Bus) -> None:
    for seq in (1, 2, 3):
        await bus.publish(event("room:live", seq))
    subscription = bus.subscribe("room:live")
    # The Redis bus starts from wherever the stream ends when its reader first gets there, so publish
    # until something arrives: it must be new, and from then on nothing is missed.
    received: list[Item] = []
    for seq in range(4, 40):
        await bus.publish(event("room:live", seq))
        received = await quiet(subscription, 0.1)
        if received:
            break
    first = seqs(received)[0] or 0
    assert first >= 4 and seqs(received) == list(range(first, first + len(received)))
    if isinstance(bus, MemoryBus):
        assert first == 4
    await bus.publish(event("room:live", seq + 1))
    assert seqs(await take(subscription, 1)) == [seq + 1]


async def test_resubscribing_with_after_seq_replays_what_was_missed(bus: Bus) -> None:
    first = bus.subscribe("room:r", after_seq=0)
    for seq in range(1, 21):
        await bus.publish(event("room:r", seq))
    assert seqs(await take(first, 20)) == list(range(1, 21))
    await first.close()

    for seq in range(21, 41):  # published while the subscriber is away
        await bus.publish(event("room:r", seq))
    again = bus.subscribe("room:r", after_seq=20)
    assert seqs(await take(again, 20)) == list(range(21, 41))

    # Nothing past after_seq yet: no replay and no Resync, just the next event when it comes.
    up_to_date = bus.subscribe("room:r", after_seq=40)
    assert await quiet(up_to_date, 0.3) == []
    await bus.publish(event("room:r", 41))
    assert seqs(await take(up_to_date, 1)) == [41]
    assert seqs(await take(again, 1)) == [41]
    # A topic the bus has never seen: nothing to replay, nothing to resync.
    fresh = bus.subscribe("room:new", after_seq=0)
    assert await quiet(fresh, 0.2) == []


@pytest.mark.parametrize("kind", BUS_KINDS)
async def test_replay_from_trimmed_history_starts_with_resync(request: pytest.FixtureRequest,
                                                              kind: str) -> None:
    bus = make_bus(request, kind, size=100)
    try:
        for seq in range(1, 1001):
            await bus.publish(event("room:t", seq))
        items = await take_until_seq(bus.subscribe("room:t", after_seq=0), 1000)
        assert isinstance(items[0], Resync)
        replayed = seqs(items[1:])
        assert replayed == list(range(replayed[0] or 0, 1001)) and (replayed[0] or 0) > 1
    finally:
        await bus.close()


async def test_gaps_yield_resync_and_repeats_are_dropped(bus: Bus) -> None:
    subscription = bus.subscribe("room:g", after_seq=0)
    for seq in (1, 2, 2, 1, 3, 6, 7, 7):
        await bus.publish(event("room:g", seq))
    assert seqs(await take(subscription, 6)) == [1, 2, 3, None, 6, 7]
    assert await quiet(subscription, 0.2) == []


async def test_memory_subscriber_that_falls_behind_gets_resync_not_a_backlog() -> None:
    bus = MemoryBus(history=100, max_queued=10)
    slow = bus.subscribe("room:s", after_seq=0)
    for seq in range(1, 26):
        await bus.publish(event("room:s", seq))
    items = await take_until_seq(slow, 25)
    assert items[0] == Resync("room:s", "subscriber fell behind")
    delivered = [seq for seq in seqs(items) if seq is not None]
    assert delivered == sorted(set(delivered)) and delivered[-1] == 25 and len(items) <= 10
    await bus.publish(event("room:s", 26))
    assert seqs(await take(slow, 1)) == [26]  # after a Resync the subscriber carries on, no second one
    await slow.close()
    assert [item async for item in slow] == []
    await bus.close()


async def test_memory_bus_without_history_resyncs_a_subscriber_that_is_behind() -> None:
    bus = MemoryBus(history=0)
    for seq in (1, 2, 3):
        await bus.publish(event("room:h", seq))
    behind = bus.subscribe("room:h", after_seq=1)
    assert seqs(await take(behind, 1)) == [None]
    await bus.publish(event("room:h", 4))
    assert seqs(await take(behind, 1)) == [4]
    current = bus.subscribe("room:h", after_seq=4)
    assert await quiet(current, 0.1) == []
    await bus.close()


async def test_create_bus_follows_the_settings(redis_url: str) -> None:
    memory = create_bus(Settings())
    assert isinstance(memory, MemoryBus)
    await memory.ping()
    redis_bus = create_bus(Settings(redis=RedisSettings(url=redis_url)), None)
    assert isinstance(redis_bus, RedisStreamBus)
    await redis_bus.ping()
    await redis_bus.close()


async def test_event_committed_before_a_crash_is_published_after_restart(db: Database,
                                                                          database_url: str) -> None:
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from bus import emit
        from config.schema import DatabaseSettings
        from store import Database

        async def main():
            db = Database(DatabaseSettings(url={database_url!r}))
            async with db.write() as session:
                await emit(session, "room:crash", "lot.sold", {{"lot": 7}})
            os._exit(1)  # committed, never published: no relay ran, nothing was cleaned up

        asyncio.run(main())
    """)
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert process.returncode == 1, stderr.decode()
    assert await unpublished(db) == 1

    bus = MemoryBus()
    subscription = bus.subscribe("room:crash", after_seq=0)
    relay = OutboxRelay(db, bus, FAST)
    relay.start()
    try:
        [delivered] = await take(subscription, 1)
        assert isinstance(delivered, Event)
        assert (delivered.seq, delivered.type, delivered.payload) == (1, "lot.sold", {"lot": 7})
        await wait_all_published(db)
    finally:
        await relay.stop()


@pytest.mark.parametrize("kind", BUS_KINDS)
async def test_concurrent_emitters_get_gapless_seqs_delivered_in_order(
        request: pytest.FixtureRequest, kind: str, db: Database,
        relay_for: Callable[[Bus], OutboxRelay]) -> None:
    bus = make_bus(request, kind)
    emitters, per_emitter = 8, 20
    subscriptions = {topic: bus.subscribe(topic, after_seq=0) for topic in ("room:busy", "room:other")}
    relay_for(bus)

    async def emitter(number: int) -> list[Event]:
        emitted = []
        for n in range(per_emitter):
            emitted.append(await emit_one(db, "room:busy", emitter=number, n=n))
            if n % 5 == 0:
                emitted.append(await emit_one(db, "room:other", emitter=number, n=n))
        return emitted

    try:
        async with asyncio.timeout(20):
            results = await asyncio.gather(*(emitter(n) for n in range(emitters)))
        busy_total = emitters * per_emitter
        other_total = emitters * len(range(0, per_emitter, 5))
        busy = await take(subscriptions["room:busy"], busy_total, within=10)
        other = await take(subscriptions["room:other"], other_total, within=10)
        assert seqs(busy) == list(range(1, busy_total + 1))
        assert seqs(other) == list(range(1, other_total + 1))
        # Each emitter's own events on a topic have increasing seqs: seq order is commit order.
        for emitted in results:
            mine = [e.seq for e in emitted if e.topic == "room:busy"]
            assert mine == sorted(mine)
        # What subscribers received is what was written, id and all.
        by_seq = {e.seq: e for emitted in results for e in emitted if e.topic == "room:busy"}
        assert all(by_seq[item.seq] == item for item in busy if isinstance(item, Event))
        async with db.read() as session:
            assert await topic_seq(session, "room:busy") == busy_total
            assert await topic_seq(session, "room:never") == 0
    finally:
        await bus.close()


@pytest.mark.redis
async def test_redis_restarting_empty_loses_nothing_from_the_outbox(
        db: Database, redis_server: RedisServer, redis_url: str,
        relay_for: Callable[[Bus], OutboxRelay]) -> None:
    publisher = RedisStreamBus(redis_url, max_backoff=0.2)
    listener = RedisStreamBus(redis_url, max_backoff=0.2)  # another node's bus
    relay = relay_for(publisher)
    subscription = listener.subscribe("room:x", after_seq=0)
    try:
        for n in (1, 2, 3):
            await emit_one(db, "room:x", n=n)
        assert seqs(await take(subscription, 3)) == [1, 2, 3]
        await wait_all_published(db)

        redis_server.stop()
        for n in (4, 5, 6):  # the database still takes writes; their events wait in the outbox
            await emit_one(db, "room:x", n=n)
        await asyncio.sleep(0.5)
        assert await unpublished(db) == 3
        with pytest.raises(RedisConnectionError):  # publish raises rather than dropping: the relay retries
            await publisher.publish(event("room:x", 99))
        redis_server.start()

        # The subscriber learns its stream may be gone, then gets what the relay publishes to the new one.
        assert seqs(await take(subscription, 4)) == [None, 4, 5, 6]
        await emit_one(db, "room:x", n=7)
        assert seqs(await take(subscription, 1)) == [7]

        redis_server.restart()  # a restart with nothing pending: still a Resync, then business as usual
        assert seqs(await take(subscription, 1)) == [None]
        await emit_one(db, "room:x", n=8)
        assert seqs(await take(subscription, 1)) == [8]
        assert relay.running
        await wait_all_published(db)
    finally:
        await listener.close()
        await publisher.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_relays_on_one_postgres_keep_per_topic_order(postgres_server: PostgresServer,
                                                               redis_url: str) -> None:
    url = postgres_server.create_database()
    databases = [Database(DatabaseSettings(url=url)) for _ in range(2)]
    await migrate(databases[0])
    buses = [RedisStreamBus(redis_url) for _ in range(3)]
    settings = EventsSettings(relay_interval_ms=20, relay_batch=7)  # small batches: the relays take turns
    relays = [OutboxRelay(database, bus, settings) for database, bus in zip(databases, buses, strict=False)]
    topics = ["room:a", "room:b", "room:c"]
    subscriptions = {topic: buses[2].subscribe(topic, after_seq=0) for topic in topics}
    for relay in relays:
        relay.start()

    async def emitter(number: int) -> None:
        for n in range(30):
            database = databases[(number + n) % 2]
            await emit_one(database, topics[(number + n) % len(topics)], emitter=number, n=n)

    try:
        async with asyncio.timeout(20):
            await asyncio.gather(*(emitter(n) for n in range(6)))
        async with databases[0].read() as session:
            totals = {topic: await topic_seq(session, topic) for topic in topics}
        assert sum(totals.values()) == 6 * 30
        for topic in topics:
            received = await take(subscriptions[topic], totals[topic], within=10)
            assert seqs(received) == list(range(1, totals[topic] + 1))
            assert await quiet(subscriptions[topic], 0.1) == []
    finally:
        for relay in relays:
            await relay.stop()
        for bus in buses:
            await bus.close()
        for database in databases:
            await database.close()


async def test_published_events_are_deleted_after_retention(db: Database) -> None:
    bus = MemoryBus()
    relay = OutboxRelay(db, bus, lambda: EventsSettings(outbox_retention_hours=1))
    for n in range(3):
        await emit_one(db, "room:old", n=n)
    await emit_one(db, "room:old", n=3)
    assert await relay.relay_once() == 4
    await emit_one(db, "room:old", n=4)  # not yet published: kept whatever its age
    async with db.write() as session:
        await session.execute(update(OutboxEvent).where(OutboxEvent.seq <= 3)
                              .values(published_at=now_ms() - 2 * 3_600_000, occurred_at=0))
        await session.execute(update(OutboxEvent).where(OutboxEvent.seq == 5).values(occurred_at=0))
    assert await relay.delete_expired() == 3
    async with db.read() as session:
        left = (await session.execute(select(OutboxEvent.seq).order_by(OutboxEvent.seq))).scalars().all()
    assert left == [4, 5]


async def test_emit_refuses_names_the_schema_cannot_hold(db: Database) -> None:
    with pytest.raises(ValueError):
        await emit_one(db, "")
    with pytest.raises(ValueError):
        await emit_one(db, "x" * 201)
    assert await unpublished(db) == 0
