"""The transactional outbox: events are written with the change they describe and published after commit.

A crash between commit and publish therefore delays an event instead of losing it: the relay finds it
unpublished in the table. Delivery is at least once (a publish can be repeated when marking it as published
fails); subscribers drop repeats by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import BigInteger, String, Table, bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bus.base import Bus
from bus.event import Event
from bus.tasks import cancel_and_wait
from config.schema import EventsSettings
from store.clock import now_ms
from store.database import Database, after_commit
from store.models import EventTopic, OutboxEvent
from store.statements import table_of

logger = logging.getLogger(__name__)

# Any fixed number, distinct from the migration lock: the PostgreSQL advisory lock that lets one relay
# publish at a time across all nodes, so events leave in the order they were committed.
_PG_RELAY_LOCK = 0x50494E45
TOPIC_MAX_LENGTH = 200
TYPE_MAX_LENGTH = 100
CLEANUP_INTERVAL_SECONDS = 60.0

# The relays running in this process; `emit` wakes them after commit so events go out without a poll delay.
_local_relays: set[OutboxRelay] = set()


def _wake_local_relays() -> None:
    for relay in _local_relays:
        relay.wake()


# Built once: building a statement and its cache key costs more than running it (every stock change emits).
_TOPICS, _OUTBOX = table_of(EventTopic), table_of(OutboxEvent)


def _next_seq(insert: Callable[[Table], Any]) -> Any:
    """Upsert of a topic's row returning its next seq (the row stays locked until commit)."""
    return (insert(_TOPICS).values(topic=bindparam("topic", type_=String), last_seq=1)
            .on_conflict_do_update(index_elements=[_TOPICS.c.topic], set_={"last_seq": _TOPICS.c.last_seq + 1})
            .returning(_TOPICS.c.last_seq))


_EVENT_FIELDS = {"type": bindparam("type", type_=String), "payload": bindparam("payload", type_=_OUTBOX.c.payload.type),
                 "occurred_at": bindparam("occurred_at", type_=BigInteger)}
_SQLITE_NEXT_SEQ = _next_seq(sqlite.insert)
_SQLITE_INSERT_EVENT = sqlite.insert(_OUTBOX).values(
    topic=bindparam("topic", type_=String), seq=bindparam("seq", type_=BigInteger), **_EVENT_FIELDS,
).returning(_OUTBOX.c.id)
_taken = _next_seq(postgresql.insert).cte("taken")
_POSTGRES_EMIT = postgresql.insert(_OUTBOX).from_select(
    ["topic", "seq", "type", "payload", "occurred_at"],
    select(bindparam("topic", type_=String), _taken.c.last_seq, *_EVENT_FIELDS.values()),
).returning(_OUTBOX.c.seq, _OUTBOX.c.id)
"""On PostgreSQL one statement (a data-modifying CTE): the topic row is locked until commit, so every round
trip saved here is time other writers of the topic (a flash sale's reserves) do not wait."""


async def emit(session: AsyncSession, topic: str, type: str, payload: Mapping[str, Any]) -> Event:
    """Record an event in the caller's write transaction (a session from `Database.write()`).

    The seq comes from an upsert on the topic's `event_topics` row, whose row lock makes concurrent writers of
    one topic take turns until commit, so seq order is commit order on every topic.
    """
    if not topic or len(topic) > TOPIC_MAX_LENGTH:
        raise ValueError(f"event topic must be 1-{TOPIC_MAX_LENGTH} characters: {topic!r}")
    if not type or len(type) > TYPE_MAX_LENGTH:
        raise ValueError(f"event type must be 1-{TYPE_MAX_LENGTH} characters: {type!r}")
    values, occurred_at = dict(payload), now_ms()
    fields = {"topic": topic, "type": type, "payload": values, "occurred_at": occurred_at}
    if session.get_bind().dialect.name == "postgresql":
        seq, outbox_id = (await session.execute(_POSTGRES_EMIT, fields)).one()
    else:
        seq = (await session.execute(_SQLITE_NEXT_SEQ, fields)).scalar_one()
        outbox_id = (await session.execute(_SQLITE_INSERT_EVENT, {**fields, "seq": seq})).scalar_one()
    after_commit(session, _wake_local_relays)
    return Event(topic=topic, seq=seq, type=type, payload=values, occurred_at=occurred_at, id=outbox_id)


async def topic_seq(session: AsyncSession, topic: str) -> int:
    """The last seq given out on `topic` (0 if none). Read it in the same transaction as a snapshot of the
    state, then subscribe with it as `after_seq`: the snapshot plus the events after it miss nothing."""
    seq = await session.scalar(select(EventTopic.last_seq).where(EventTopic.topic == topic))
    return int(seq or 0)


_UNPUBLISHED = (select(_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.seq, _OUTBOX.c.type, _OUTBOX.c.payload,
                       _OUTBOX.c.occurred_at)
                .where(_OUTBOX.c.published_at.is_(None)).order_by(_OUTBOX.c.id).limit(bindparam("batch")))
_TAKE_RELAY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_MARK_PUBLISHED = (update(_OUTBOX).where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
                   .values(published_at=bindparam("at")))


class OutboxRelay:
    """Publishes unpublished outbox rows in id order, then marks them, all in one write transaction.

    `settings` may be a callable, read again on every pass, so live reloads of the interval, batch size and
    retention apply without a restart.
    """

    def __init__(self, db: Database, bus: Bus, settings: EventsSettings | Callable[[], EventsSettings], *,
                 min_backoff: float = 0.05, max_backoff: float = 2.0) -> None:
        self.db = db
        self.bus = bus
        if isinstance(settings, EventsSettings):
            fixed = settings
            self._settings: Callable[[], EventsSettings] = lambda: fixed
        else:
            self._settings = settings
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_cleanup = 0.0

    @property
    def settings(self) -> EventsSettings:
        return self._settings()

    def start(self) -> None:
        """Run `run()` as a background task until `stop()`."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("outbox relay already started")
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the background task; an unfinished pass rolls back and its events go out on the next run."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Relay until cancelled. Failures (bus or database down) are retried with capped back-off."""
        _local_relays.add(self)
        backoff = self.min_backoff
        failures = 0
        try:
            while True:
                self._wakeup.clear()
                try:
                    published = await self.relay_once()
                except Exception as exc:
                    if failures == 0:
                        logger.warning("outbox relay failed (%s: %s); retrying with back-off",
                                       type(exc).__name__, exc)
                    failures += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if failures:
                    logger.info("outbox relay publishing again after %d failed attempts", failures)
                    failures, backoff = 0, self.min_backoff
                settings = self.settings
                if published >= settings.relay_batch:
                    continue
                await self._cleanup_when_due()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.relay_interval_ms / 1000):
                        await self._wakeup.wait()
        finally:
            _local_relays.discard(self)

    async def relay_once(self) -> int:
        """Publish one batch; returns how many events were published. Raises (after rolling back) if the
        bus refuses one, so none of the batch is marked and all of it is retried."""
        # A connection, not an ORM session: a pass follows every commit that emits, so its set-up counts.
        async with self.db.writer.begin() as connection:
            if not self.db.is_sqlite:
                await connection.execute(_TAKE_RELAY_LOCK, {"key": _PG_RELAY_LOCK})
            rows = (await connection.execute(_UNPUBLISHED, {"batch": self.settings.relay_batch})).all()
            for row in rows:
                await self.bus.publish(Event(topic=row.topic, seq=row.seq, type=row.type, payload=row.payload,
                                             occurred_at=row.occurred_at, id=row.id))
            if rows:
                await connection.execute(_MARK_PUBLISHED, {"ids": [row.id for row in rows], "at": now_ms()})
            return len(rows)

    async def delete_expired(self) -> int:
        """Delete published events older than the retention; returns how many."""
        cutoff = now_ms() - self.settings.outbox_retention_hours * 3_600_000
        async with self.db.write() as session:
            result = await session.execute(delete(OutboxEvent).where(OutboxEvent.published_at.is_not(None),
                                                                     OutboxEvent.published_at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)

    async def _cleanup_when_due(self) -> None:
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + CLEANUP_INTERVAL_SECONDS
        try:
            deleted = await self.delete_expired()
        except Exception as exc:
            logger.warning("outbox cleanup failed (%s); trying again later", exc)
            return
        if deleted:
            logger.info("deleted %d published outbox events past retention", deleted)
