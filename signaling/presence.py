"""Viewer count and reactions: counted on each node, summed through the database, sent as few events.

Each node writes how many sockets it holds in a room (`room_presence`, one row per node) when that changes
and refreshes it every `REFRESH_SECONDS`; the room's count is the sum of fresh rows, announced as
`viewers.changed` once per change (`overlay.announce.changed`). Reactions are counted per window and sent as
one `reactions` event with the counts, not one broadcast per tap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from config.schema import OverlaySettings
from overlay import announce
from overlay.models import RoomPresenceRow
from signaling.background import spawn
from signaling.room_feed import publish
from store import Database, clock

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
STALE_MS = 30_000
"""A node's row older than this no longer counts (the node is gone)."""
REACTIONS = ("heart", "fire", "clap", "laugh", "wow")
REACTIONS_PER_WINDOW = 20
"""Taps one socket may add per window; more are acknowledged and not counted."""


async def viewer_count(session: AsyncSession, slug: str) -> int:
    fresh = RoomPresenceRow.updated_at > clock.now_ms() - STALE_MS
    total = await session.scalar(select(func.sum(RoomPresenceRow.count)).where(RoomPresenceRow.room == slug, fresh))
    return int(total or 0)


class Presence:
    def __init__(self, database: Callable[[], Database], settings: Callable[[], OverlaySettings]) -> None:
        self._database = database
        self._settings = settings
        self.node = uuid.uuid4().hex
        self._counts: Counter[str] = Counter()
        self._written: dict[str, tuple[int, float]] = {}
        self._reactions: dict[str, Counter[str]] = {}
        self._taps: Counter[tuple[str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def joined(self, slug: str) -> None:
        self._counts[slug] += 1
        self._wake()

    def left(self, slug: str) -> None:
        self._counts[slug] -= 1
        self._wake()

    def react(self, sid: str, slug: str, kind: str) -> None:
        if self._taps[(sid, slug)] >= REACTIONS_PER_WINDOW:
            return
        self._taps[(sid, slug)] += 1
        self._reactions.setdefault(slug, Counter())[kind] += 1
        self._wake()

    def _wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = spawn(self._run())

    async def _run(self) -> None:
        """Flush until nothing is left to report; the next join or tap starts it again."""
        while True:
            await asyncio.sleep(min(self._settings().presence_interval_ms,
                                    self._settings().reaction_window_ms) / 1000)
            reactions, self._reactions = self._reactions, {}
            self._taps.clear()
            due = [slug for slug in set(self._counts) | set(self._written) if self._due(slug)]
            if not reactions and not due:
                if not any(self._counts.values()):
                    return
                continue
            try:
                async with self._database().write() as session:
                    for slug in due:
                        await self._write(session, slug)
                    for slug, counts in reactions.items():
                        await publish(session, slug, "reactions",
                                      {"counts": dict(counts), "window_ms": self._settings().reaction_window_ms})
            except Exception:
                logger.exception("presence flush failed")

    def _due(self, slug: str) -> bool:
        count = self._counts.get(slug, 0)
        written = self._written.get(slug)
        if written is None:
            return count > 0
        return written[0] != count or (count > 0 and time.monotonic() - written[1] > REFRESH_SECONDS)

    async def _write(self, session: AsyncSession, slug: str) -> None:
        count = self._counts.get(slug, 0)
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(RoomPresenceRow).values(room=slug, node=self.node, count=count, updated_at=clock.now_ms())
        await session.execute(statement.on_conflict_do_update(
            index_elements=[RoomPresenceRow.room, RoomPresenceRow.node],
            set_={"count": count, "updated_at": statement.excluded.updated_at}))
        if count > 0:
            self._written[slug] = (count, time.monotonic())
        else:
            self._written.pop(slug, None)
            self._counts.pop(slug, None)
        total = await viewer_count(session, slug)
        if await announce.changed(session, slug, "viewers", {"count": total}):
            await publish(session, slug, "viewers.changed", {"count": total})
