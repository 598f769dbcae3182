"""WHIP (RFC 9725): OBS, GStreamer and the studio page publish into a room with a host's stream key.

The database decides who may publish and which show goes live; the media worker only sees SDP. A publisher
that leaves (DELETE, ICE failure, worker restart) ends the show after `rooms.end_grace_seconds`, unless it
comes back first and resumes the same show.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import NotFound
from accounts.service import get_user
from accounts.stream_keys import user_for_stream_key
from accounts.tokens import bearer_token, verify_access_token
from accounts.user import User
from media.api import MediaError, SessionAnswer
from rooms.live import (
    END_IF_IDLE_JOB,
    close_publisher_session,
    end_if_idle,
    find_publisher_session,
    open_publisher_session,
    open_publisher_sessions,
    schedule_end_if_idle,
)
from rooms.publish import grant_publish
from rooms.service import get_show
from rooms.values import PublisherKind, Show
from signaling.background import spawn
from signaling.edge import EDGE, EdgeContext
from signaling.sdp_http import add_session_routes, ice_server_links, patch_session, read_sdp, session_created
from store import after_commit, jobs

logger = logging.getLogger(__name__)


async def publish(request: web.Request) -> web.Response:
    edge, room = request.app[EDGE], request.match_info["room"]
    offer = await read_sdp(request)
    answer = await start_publishing(edge, room, offer, lambda session: _publisher(session, request), "whip")
    return session_created(f"/whip/{room}/{answer.session_id}", answer,
                           ice_server_links(edge.ice_servers(answer.session_id)))


Identify = Callable[[AsyncSession], Awaitable[User]]
"""Finds who publishes, inside the transaction that authorises the publish (so a disabled account is seen)."""


async def start_publishing(edge: EdgeContext, room: str, offer: str, identify: Identify,
                           kind: PublisherKind) -> SessionAnswer:
    """Authorise a publisher, open its session (live show, co-hosting rule, replacing the same host's
    stale session) and negotiate its media. WHIP and the live-room socket both publish through here, so
    the rules cannot drift apart."""
    settings = edge.settings()
    async with edge.database().write() as session:
        user = await identify(session)
        grant = await grant_publish(session, user, room, settings.rooms.create_on_publish)
        others = [p for p in await open_publisher_sessions(session) if p.show_id == grant.show.id]
        if not settings.rooms.cohosting and any(p.user_id != user.id for p in others):
            raise MediaError("publisher_exists", f"room {room!r} already has its publisher (co-hosting is off)", 409)
        replaced = [p.id for p in others if p.user_id == user.id]  # the same host reconnecting
        publisher = await open_publisher_session(session, grant.show, grant.user, kind)
        await jobs.cancel(session, f"{END_IF_IDLE_JOB}:{grant.show.id}")
    for stale in replaced:
        await edge.media().close_session(stale)
        await publisher_gone(edge, stale)
    try:
        answer = await edge.media().open_publisher(room, publisher.id, offer)
        if grant.user.id == grant.room.owner_id:
            await edge.media().set_program_feed(room, publisher.id)  # the owner's feed by default
    except MediaError:
        await publisher_gone(edge, publisher.id)
        raise
    logger.info("publish", extra={"room": room, "session_id": publisher.id, "kind": kind,
                                  "codecs": answer.codecs})
    return answer


async def _publisher(session: AsyncSession, request: web.Request) -> User:
    """Who publishes: the owner of a stream key (OBS, GStreamer) or a host signed in to the studio page,
    whose access token (a JWT) stands in for the key."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is not None and token.count(".") == 2:
        principal = verify_access_token(token, request.app[EDGE].secret_key())
        if principal.user_id is None:
            raise MediaError("bad_token", "guests cannot publish", 401)
        return await get_user(session, principal.user_id)
    user = await user_for_stream_key(session, token)
    if user is None:
        raise MediaError("bad_stream_key", "send the host's stream key (or access token) as a Bearer token", 401)
    return user


async def _owned_session(request: web.Request) -> str:
    """The session id in the URL, if it is open, in this room, and the stream key is its publisher's."""
    edge, room, session_id = request.app[EDGE], request.match_info["room"], request.match_info["session"]
    async with edge.database().read() as session:
        user = await _publisher(session, request)
        publisher = await find_publisher_session(session, session_id)
        show = await get_show(session, publisher.show_id) if publisher is not None else None
    if publisher is None or publisher.ended_at is not None or show is None or show.room_slug != room:
        raise MediaError("session_not_found", "no such publishing session", 404)
    if publisher.user_id != user.id and not user.is_admin:
        raise MediaError("not_session_owner", "this session belongs to another publisher", 403)
    return session_id


async def unpublish(request: web.Request) -> web.Response:
    session_id = await _owned_session(request)
    await request.app[EDGE].media().close_session(session_id)
    await publisher_gone(request.app[EDGE], session_id)
    return web.Response(status=200)


async def patch(request: web.Request) -> web.Response:
    session_id = await _owned_session(request)
    return await patch_session(request, True, session_id)


async def publisher_gone(edge: EdgeContext, session_id: str) -> None:
    """Record that a publisher left; the show ends after the grace period if nobody else publishes."""
    grace_ms = edge.settings().rooms.end_grace_seconds * 1000
    try:
        async with edge.database().write() as session:
            remaining = await close_publisher_session(session, session_id)
            publisher = await find_publisher_session(session, session_id)
            if remaining == 0 and publisher is not None:
                await schedule_end_if_idle(session, publisher.show_id, grace_ms)
    except NotFound:
        return


ShowEnded = Callable[[Show], Awaitable[None]]


async def end_show_when_idle(edge: EdgeContext, session: AsyncSession, job: jobs.JobContext,
                             on_ended: ShowEnded | None = None) -> None:
    """The grace-period job: end the show if nobody reconnected, then close its media room and tell
    `on_ended` (the live-room namespace), both after commit so nobody hears of an end that rolled back."""
    show = await end_if_idle(session, job)
    if show is not None:
        after_commit(session, lambda: spawn(_ended(edge, show, on_ended)))


async def _ended(edge: EdgeContext, show: Show, on_ended: ShowEnded | None) -> None:
    """Viewers hear that the show ended before their sessions close, so they do not try to resubscribe."""
    try:
        if on_ended is not None:
            await on_ended(show)
    finally:
        await edge.media().end_room(show.room_slug)


def add_routes(app: web.Application) -> None:
    add_session_routes(app, "/whip", publish, unpublish, patch)
