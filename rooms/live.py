"""Going live and ending: shows change state here, and publisher sessions open and close.

At most one show per room is live. `go_live` locks the room row (PostgreSQL; SQLite writers take turns
anyway) so concurrent publishers agree on one show; the partial unique index on live shows is the last line
of defence, and a loser of that race gets the winner's show. State changes are conditional updates, so a
change that lost a race changes nothing. Going live and ending are announced on the room's event topic
through the outbox, in the same transaction.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.user import User
from bus import emit
from rooms.models import PublisherSessionRow, RoomRow, ShowRow
from rooms.service import _room_row, _room_value, get_show
from rooms.values import PUBLISHER_KINDS, PublisherSession, Room, Show, can_publish
from store import clock, jobs

logger = logging.getLogger(__name__)

SHOW_LIVE = "show.live"
SHOW_ENDED = "show.ended"


def _now(now_ms: int | None) -> int:
    return clock.now_ms() if now_ms is None else now_ms


async def _lock_room(session: AsyncSession, room_id: int) -> RoomRow:
    return await _room_row(session, room_id, lock=True)


async def _live_row(session: AsyncSession, room_id: int) -> ShowRow | None:
    return (await session.execute(
        select(ShowRow).where(ShowRow.room_id == room_id, ShowRow.status == "live")
        .execution_options(populate_existing=True))).scalar_one_or_none()


async def _start(session: AsyncSession, room: RoomRow, now: int) -> ShowRow | None:
    """Make the earliest scheduled show live, or start a new one; None if the scheduled show was started
    by someone else meanwhile. Raises IntegrityError if another show of the room went live first."""
    scheduled_id = (await session.execute(
        select(ShowRow.id).where(ShowRow.room_id == room.id, ShowRow.status == "scheduled")
        .order_by(ShowRow.scheduled_start.asc().nulls_last(), ShowRow.id).limit(1))).scalar_one_or_none()
    if scheduled_id is None:
        row = ShowRow(room_id=room.id, title=room.title, description="", status="live", scheduled_start=None,
                      started_at=now, ended_at=None, created_at=now)
        session.add(row)
        await session.flush()
        return row
    started: ShowRow | None = (await session.execute(
        update(ShowRow).where(ShowRow.id == scheduled_id, ShowRow.status == "scheduled")
        .values(status="live", started_at=now).returning(ShowRow)
        .execution_options(populate_existing=True))).scalar_one_or_none()
    return started


async def go_live(session: AsyncSession, room: Room, *, now_ms: int | None = None) -> Show:
    """The room's live show: the one already live, else its earliest scheduled show, else a new show titled
    like the room. Emits "show.live" when a show starts."""
    room_row = await _lock_room(session, room.id)
    live = await _live_row(session, room_row.id)
    if live is not None:
        return Show.from_row(live, room_row.slug)
    now = _now(now_ms)
    try:
        async with session.begin_nested():
            started = await _start(session, room_row, now)
    except IntegrityError:
        started = None
    if started is None:
        live = await _live_row(session, room_row.id)
        if live is None:
            raise Conflict("show_state_changed", "the room's shows changed meanwhile; try again")
        logger.info("lost the race to go live; joining the live show", extra={"room": room_row.slug})
        return Show.from_row(live, room_row.slug)
    show = Show.from_row(started, room_row.slug)
    await emit(session, f"room:{room_row.slug}", SHOW_LIVE,
               {"show_id": show.id, "room_id": show.room_id, "title": show.title, "started_at": now,
                "scheduled_start": show.scheduled_start, "server_time": clock.now_ms()})
    logger.info("show live", extra={"room": room_row.slug, "show_id": show.id})
    return show


async def end_show(session: AsyncSession, show: Show, *, now_ms: int | None = None) -> Show:
    """End a live show, closing its publisher sessions, and emit "show.ended". Ending an ended show returns
    it unchanged; a show that never went live gets Conflict("show_not_live")."""
    now = _now(now_ms)
    ended: ShowRow | None = (await session.execute(
        update(ShowRow).where(ShowRow.id == show.id, ShowRow.status == "live")
        .values(status="ended", ended_at=now).returning(ShowRow)
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if ended is None:
        current = await get_show(session, show.id)
        if current.status == "ended":
            return current
        raise Conflict("show_not_live", "the show is not live")
    open_sessions = (PublisherSessionRow.show_id == ended.id, PublisherSessionRow.ended_at.is_(None))
    await session.execute(update(PublisherSessionRow).where(*open_sessions).values(ended_at=now))
    room_row = await _room_row(session, ended.room_id)
    room_row.program_publisher_id = None
    await session.flush()
    result = Show.from_row(ended, room_row.slug)
    await emit(session, f"room:{room_row.slug}", SHOW_ENDED,
               {"show_id": result.id, "room_id": result.room_id, "started_at": result.started_at,
                "ended_at": now, "server_time": clock.now_ms()})
    logger.info("show ended", extra={"room": room_row.slug, "show_id": result.id})
    return result


async def open_publisher_session(session: AsyncSession, show: Show, user: User, kind: str, *,
                                 now_ms: int | None = None) -> PublisherSession:
    """Record that `user` publishes into the live `show` over `kind` ("whip" or "browser")."""
    checked_kind = next((k for k in PUBLISHER_KINDS if k == kind), None)
    if checked_kind is None:
        raise Invalid("invalid_kind", f"kind must be one of {', '.join(PUBLISHER_KINDS)}", "kind")
    # Locking the show makes a concurrent end_show either wait for this session (and close it) or finish
    # first (and this one sees the show ended).
    row = (await session.execute(select(ShowRow).where(ShowRow.id == show.id).with_for_update()
                                 .execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound("show_not_found", "no such show")
    if row.status != "live":
        raise Conflict("show_not_live", "the show is not live")
    room = await _room_value(session, await _room_row(session, row.room_id))
    if not can_publish(user, room):
        raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins can publish")
    publisher = PublisherSessionRow(id=uuid.uuid4().hex, show_id=row.id, user_id=user.id, kind=checked_kind,
                                    started_at=_now(now_ms), ended_at=None)
    session.add(publisher)
    await session.flush()
    logger.info("publisher session opened",
                extra={"room": room.slug, "show_id": row.id, "publisher_session": publisher.id, "kind": kind})
    return PublisherSession.from_row(publisher)


async def close_publisher_session(session: AsyncSession, publisher_session_id: str, *,
                                  now_ms: int | None = None) -> int:
    """Close a publisher session (idempotent); returns how many sessions remain open in its show, so the
    caller can decide whether the show ends."""
    row = await session.get(PublisherSessionRow, publisher_session_id, populate_existing=True)
    if row is None:
        raise NotFound("publisher_session_not_found", "no such publisher session")
    if row.ended_at is None:
        row.ended_at = _now(now_ms)
        await session.execute(update(RoomRow).where(RoomRow.program_publisher_id == publisher_session_id)
                              .values(program_publisher_id=None))
        logger.info("publisher session closed", extra={"show_id": row.show_id,
                                                       "publisher_session": publisher_session_id})
    return await _open_count(session, row.show_id)


async def _open_count(session: AsyncSession, show_id: int) -> int:
    await session.flush()
    return int((await session.execute(
        select(func.count()).select_from(PublisherSessionRow)
        .where(PublisherSessionRow.show_id == show_id, PublisherSessionRow.ended_at.is_(None)))).scalar_one())


async def set_program_publisher(session: AsyncSession, room: Room, publisher_session_id: str | None) -> Room:
    """Choose which open publisher session of the room's live show viewers see (None: no choice made)."""
    row = await _lock_room(session, room.id)
    if publisher_session_id is not None:
        found = (await session.execute(
            select(PublisherSessionRow.id).join(ShowRow, ShowRow.id == PublisherSessionRow.show_id)
            .where(PublisherSessionRow.id == publisher_session_id, PublisherSessionRow.ended_at.is_(None),
                   ShowRow.room_id == row.id, ShowRow.status == "live"))).scalar_one_or_none()
        if found is None:
            message = "no open publisher session of the room's live show has that id"
            raise NotFound("publisher_session_not_found", message, "publisher_session_id")
    row.program_publisher_id = publisher_session_id
    await session.flush()
    return await _room_value(session, row)


END_IF_IDLE_JOB = "show.end_if_idle"


async def schedule_end_if_idle(session: AsyncSession, show_id: int, grace_ms: int, *,
                               now_ms: int | None = None) -> None:
    """After the last publisher leaves, end the show once `grace_ms` pass without one coming back, as a
    durable job so a restart in between still ends it."""
    await jobs.schedule(session, END_IF_IDLE_JOB, _now(now_ms) + grace_ms, {"show_id": show_id},
                        key=f"{END_IF_IDLE_JOB}:{show_id}")


async def end_if_idle(session: AsyncSession, job: jobs.JobContext) -> Show | None:
    """Job handler: end the show unless a publisher reconnected during the grace period; returns the show
    it ended."""
    show_id = int(job.payload["show_id"])
    if await _open_count(session, show_id) == 0:
        show = await get_show(session, show_id)
        if show.status == "live":
            return await end_show(session, show)
    return None


async def find_publisher_session(session: AsyncSession, publisher_session_id: str) -> PublisherSession | None:
    row = await session.get(PublisherSessionRow, publisher_session_id)
    return PublisherSession.from_row(row) if row is not None else None


async def open_publisher_sessions(session: AsyncSession) -> list[PublisherSession]:
    """Every publisher session not yet closed (after a media worker restart, all of them are gone)."""
    rows = (await session.execute(select(PublisherSessionRow).where(PublisherSessionRow.ended_at.is_(None))))
    return [PublisherSession.from_row(row) for row in rows.scalars()]
