"""Deciding whether a stream key may publish into a room, which is what WHIP asks before accepting media."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, NotFound, Unauthorized
from accounts.stream_keys import user_for_stream_key
from accounts.user import User
from rooms.live import go_live
from rooms.service import create_room, find_room, get_room
from rooms.values import PublishGrant, can_publish

logger = logging.getLogger(__name__)


async def authorize_publish(session: AsyncSession, stream_key: str | None, slug: str, create_on_publish: bool,
                            *, now_ms: int | None = None) -> PublishGrant:
    """Check the key and the room, then make sure the room has a live show (see `go_live`).

    A missing or unknown key is Unauthorized("bad_stream_key"); a room the key's owner may not publish into is
    Forbidden("not_room_publisher"). A missing room is created, owned by the key's owner and titled like its
    slug, when `create_on_publish`, and is NotFound("room_not_found") otherwise.
    """
    user = await user_for_stream_key(session, stream_key)
    if user is None:
        raise Unauthorized("bad_stream_key", "unknown stream key")
    return await grant_publish(session, user, slug, create_on_publish, now_ms=now_ms)


async def grant_publish(session: AsyncSession, user: User, slug: str, create_on_publish: bool, *,
                        now_ms: int | None = None) -> PublishGrant:
    """The room part of `authorize_publish`, for a publisher already identified (a signed-in host)."""
    room = await find_room(session, slug)
    created = False
    if room is None:
        if not create_on_publish:
            raise NotFound("room_not_found", "no such room")
        try:
            room = await create_room(session, user, slug, slug, now_ms=now_ms)
            created = True
        except Conflict:
            room = await get_room(session, slug)  # created by a concurrent publish
    if not can_publish(user, room):
        logger.info("publish refused", extra={"room": slug, "user_id": user.id})
        raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins may publish into it")
    show = await go_live(session, room, now_ms=now_ms)
    return PublishGrant(user=user, room=room, show=show, created_room=created)
