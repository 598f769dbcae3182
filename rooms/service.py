"""Rooms, their co-hosts, and scheduling and listing shows.

Every function takes the caller's session, so a caller can combine several in one transaction; functions
that write need a session from `Database.write()`. Functions given a `Room` or `Show` value re-read it, so a
value read in an earlier transaction is a fine argument and authorisation follows the current state.
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.models import UserRow
from accounts.user import PUBLISHER_ROLES, User
from rooms.models import RoomCohostRow, RoomRow, ShowRow
from rooms.values import (
    GUEST_POLICIES,
    VISIBILITIES,
    GuestPolicy,
    Room,
    Show,
    Visibility,
    can_manage,
    can_publish,
)
from store import clock

logger = logging.getLogger(__name__)

SLUG_MIN_LENGTH = 3
SLUG_MAX_LENGTH = 64
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 5000
LIST_MAX_LIMIT = 100


def _now(now_ms: int | None) -> int:
    return clock.now_ms() if now_ms is None else now_ms


def validate_slug(slug: str) -> str:
    """Lower-case letters, digits and inner hyphens, 3-64 characters: a URL segment and an event topic."""
    if not SLUG_MIN_LENGTH <= len(slug) <= SLUG_MAX_LENGTH or not _SLUG.match(slug):
        raise Invalid("invalid_slug", f"slug must be {SLUG_MIN_LENGTH}-{SLUG_MAX_LENGTH} lower-case letters, "
                      "digits and hyphens, starting and ending with a letter or digit", "slug")
    return slug


def validate_title(title: str, field: str = "title") -> str:
    value = " ".join(title.split())
    if not value or len(value) > TITLE_MAX_LENGTH or not value.isprintable():
        raise Invalid("invalid_title", f"{field} must be 1-{TITLE_MAX_LENGTH} printable characters", field)
    return value


_Choice = TypeVar("_Choice", bound=str)


def _choice(value: str, choices: tuple[_Choice, ...], field: str) -> _Choice:
    for choice in choices:
        if value == choice:
            return choice
    raise Invalid(f"invalid_{field}", f"{field} must be one of {', '.join(choices)}", field)


async def _room_value(session: AsyncSession, row: RoomRow) -> Room:
    cohosts = (await session.execute(select(RoomCohostRow.user_id)
                                     .where(RoomCohostRow.room_id == row.id))).scalars().all()
    return Room.from_row(row, tuple(cohosts))


async def _room_row(session: AsyncSession, room_id: int, *, lock: bool = False) -> RoomRow:
    query = select(RoomRow).where(RoomRow.id == room_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound("room_not_found", "no such room")
    return row


async def find_room(session: AsyncSession, slug: str) -> Room | None:
    row = (await session.execute(select(RoomRow).where(RoomRow.slug == slug))).scalar_one_or_none()
    return None if row is None else await _room_value(session, row)


async def get_room(session: AsyncSession, slug: str) -> Room:
    """The room with this slug; NotFound("room_not_found") otherwise."""
    room = await find_room(session, slug)
    if room is None:
        raise NotFound("room_not_found", "no such room")
    return room


async def get_room_by_id(session: AsyncSession, room_id: int) -> Room:
    return await _room_value(session, await _room_row(session, room_id))


async def create_room(session: AsyncSession, owner: User, slug: str, title: str,
                      visibility: str = "public", guest_policy: str = "watch_and_chat", *,
                      now_ms: int | None = None) -> Room:
    """A new room owned by `owner`: Forbidden("not_a_host") unless a host or admin, Invalid for a bad slug,
    title, visibility or guest policy, Conflict("slug_taken") if the slug is in use."""
    if owner.disabled or not owner.is_publisher:
        raise Forbidden("not_a_host", "only hosts and admins can create rooms")
    slug = validate_slug(slug)
    title = validate_title(title)
    checked_visibility: Visibility = _choice(visibility, VISIBILITIES, "visibility")
    checked_policy: GuestPolicy = _choice(guest_policy, GUEST_POLICIES, "guest_policy")
    taken = Conflict("slug_taken", "a room with this slug already exists", "slug")
    if await find_room(session, slug) is not None:
        raise taken
    row = RoomRow(slug=slug, owner_id=owner.id, title=title, visibility=checked_visibility,
                  guest_policy=checked_policy, created_at=_now(now_ms), program_publisher_id=None)
    # On PostgreSQL a concurrent creation can win after the check; the savepoint keeps the caller's
    # transaction usable once the unique constraint has said so.
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise taken from None
    logger.info("room created", extra={"room": slug, "owner_id": owner.id})
    return Room.from_row(row)


async def update_room(session: AsyncSession, actor: User, room: Room, *, title: str | None = None,
                      visibility: str | None = None, guest_policy: str | None = None) -> Room:
    """Change what is given (the slug never changes: links and event topics depend on it). Owner or admin."""
    row = await _room_row(session, room.id, lock=True)
    current = await _room_value(session, row)
    if not can_manage(actor, current):
        raise Forbidden("not_room_owner", "only the room's owner or an admin can change it")
    if title is not None:
        row.title = validate_title(title)
    if visibility is not None:
        row.visibility = _choice(visibility, VISIBILITIES, "visibility")
    if guest_policy is not None:
        row.guest_policy = _choice(guest_policy, GUEST_POLICIES, "guest_policy")
    await session.flush()
    return await _room_value(session, row)


async def add_cohost(session: AsyncSession, actor: User, room: Room, user_id: int) -> Room:
    """Let another host or admin publish into the room (idempotent). Owner or admin."""
    row = await _room_row(session, room.id, lock=True)
    if not can_manage(actor, await _room_value(session, row)):
        raise Forbidden("not_room_owner", "only the room's owner or an admin can change its co-hosts")
    cohost = await session.get(UserRow, user_id)
    if cohost is None:
        raise NotFound("user_not_found", "no such user", "user_id")
    if cohost.role not in PUBLISHER_ROLES:
        raise Invalid("cohost_not_host", "co-hosts must be hosts or admins", "user_id")
    if cohost.id == row.owner_id:
        raise Invalid("cohost_is_owner", "the owner cannot also be a co-host", "user_id")
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    key = [RoomCohostRow.room_id, RoomCohostRow.user_id]
    await session.execute(insert(RoomCohostRow).values(room_id=row.id, user_id=user_id)
                          .on_conflict_do_nothing(index_elements=key))
    return await _room_value(session, row)


async def remove_cohost(session: AsyncSession, actor: User, room: Room, user_id: int) -> Room:
    """Take a co-host's right to publish away (idempotent). Owner or admin."""
    row = await _room_row(session, room.id, lock=True)
    if not can_manage(actor, await _room_value(session, row)):
        raise Forbidden("not_room_owner", "only the room's owner or an admin can change its co-hosts")
    cohost = await session.get(RoomCohostRow, (row.id, user_id))
    if cohost is not None:
        await session.delete(cohost)
        await session.flush()
    return await _room_value(session, row)


async def schedule_show(session: AsyncSession, actor: User, room: Room, title: str, description: str = "",
                        scheduled_start: int | None = None, *, now_ms: int | None = None) -> Show:
    """Announce a show; it goes live when a publisher starts (see `go_live`). For whoever may publish."""
    current = await _room_value(session, await _room_row(session, room.id))
    if not can_publish(actor, current):
        raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins can schedule shows")
    title = validate_title(title)
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise Invalid("invalid_description",
                      f"description must have at most {DESCRIPTION_MAX_LENGTH} characters", "description")
    if scheduled_start is not None and scheduled_start < 0:
        raise Invalid("invalid_scheduled_start", "scheduled start must be milliseconds since the epoch",
                      "scheduled_start")
    row = ShowRow(room_id=current.id, title=title, description=description.strip(), status="scheduled",
                  scheduled_start=scheduled_start, started_at=None, ended_at=None, created_at=_now(now_ms))
    session.add(row)
    await session.flush()
    return Show.from_row(row, current.slug)


async def get_show(session: AsyncSession, show_id: int) -> Show:
    """The show with this id; NotFound("show_not_found") otherwise."""
    found = (await session.execute(
        select(ShowRow, RoomRow.slug).join(RoomRow, RoomRow.id == ShowRow.room_id)
        .where(ShowRow.id == show_id).execution_options(populate_existing=True))).one_or_none()
    if found is None:
        raise NotFound("show_not_found", "no such show")
    row, slug = found
    return Show.from_row(row, slug)


async def list_shows(session: AsyncSession, which: str, limit: int = 20, *, offset: int = 0,
                     room_id: int | None = None) -> list[Show]:
    """`which` "live": live shows (latest start first); "upcoming": scheduled ones (soonest first, unscheduled
    last); "past": ended ones (latest end first). At most `limit` (capped at 100), after skipping `offset`.

    Public rooms only, unless `room_id` asks for one room's shows, which a room page lists even when the
    room is unlisted.
    """
    query = select(ShowRow, RoomRow.slug).join(RoomRow, RoomRow.id == ShowRow.room_id)
    if which == "live":
        query = query.where(ShowRow.status == "live").order_by(ShowRow.started_at.desc(), ShowRow.id.desc())
    elif which == "upcoming":
        query = query.where(ShowRow.status == "scheduled").order_by(
            ShowRow.scheduled_start.asc().nulls_last(), ShowRow.id)
    elif which == "past":
        query = query.where(ShowRow.status == "ended").order_by(ShowRow.ended_at.desc(), ShowRow.id.desc())
    else:
        raise Invalid("invalid_listing", "listing must be live, upcoming or past", "which")
    if room_id is None:
        query = query.where(RoomRow.visibility == "public")
    else:
        query = query.where(ShowRow.room_id == room_id)
    query = query.limit(max(1, min(limit, LIST_MAX_LIMIT))).offset(max(0, offset))
    rows = (await session.execute(query.execution_options(populate_existing=True))).all()
    return [Show.from_row(row, slug) for row, slug in rows]
