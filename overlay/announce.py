"""Coalesced state (a product's stock in a room, the viewer count) announced once per change across nodes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from overlay.models import AnnouncedRow
from store import clock


async def changed(session: AsyncSession, room: str, key: str, value: dict[str, Any]) -> bool:
    """Record `value` as the last announced one of `key` in `room`; True if it differs from the previous one.

    One conditional upsert: of two nodes racing to announce the same value, only one sees a change (the
    writer lock on SQLite, the row lock on PostgreSQL), so the room hears it once.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(AnnouncedRow).values(room=room, key=key, value=text, updated_at=clock.now_ms())
    statement = statement.on_conflict_do_update(
        index_elements=[AnnouncedRow.room, AnnouncedRow.key],
        set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        where=AnnouncedRow.value != statement.excluded.value)
    result = await session.execute(statement.returning(AnnouncedRow.key))
    return result.first() is not None
