"""WHEP: players (ours and anyone's) watch a room's program feed; no account needed for a public room."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from media.api import MediaError, SessionAnswer
from signaling.edge import EDGE, EdgeContext
from signaling.sdp_http import add_session_routes, ice_server_links, patch_session, read_sdp, session_created

logger = logging.getLogger(__name__)

# Viewer sessions this process opened, by id → room, so DELETE only ever ends a viewer of that room.
VIEWERS = web.AppKey("whep_viewers", dict[str, str])


async def view(request: web.Request) -> web.Response:
    edge, room = request.app[EDGE], request.match_info["room"]
    offer = await read_sdp(request)
    answer = await start_viewing(edge, room, offer)
    request.app[VIEWERS][answer.session_id] = room
    return session_created(f"/whep/{room}/{answer.session_id}", answer,
                           ice_server_links(edge.ice_servers(answer.session_id)))


async def start_viewing(edge: EdgeContext, room: str, offer: str, tracks: str = "") -> SessionAnswer:
    """Open a viewer session on the room's program feed (or, for our pages, the `tracks` they name): WHEP
    and the live-room socket both watch through here. The caller keeps track of the session, so only its
    opener can end it."""
    session_id = uuid.uuid4().hex
    answer = await edge.media().open_viewer(room, session_id, offer, tracks)
    logger.info("viewer joined", extra={"room": room, "session_id": session_id})
    return answer


def _viewer_session(request: web.Request) -> str:
    session_id = request.match_info["session"]
    if request.app[VIEWERS].get(session_id) != request.match_info["room"]:
        raise MediaError("session_not_found", "no such viewing session", 404)
    return session_id


async def stop_viewing(request: web.Request) -> web.Response:
    session_id = _viewer_session(request)
    request.app[VIEWERS].pop(session_id, None)
    await request.app[EDGE].media().close_session(session_id)
    return web.Response(status=200)


async def patch(request: web.Request) -> web.Response:
    return await patch_session(request, True, _viewer_session(request))


def viewer_closed(app: web.Application, session_id: str) -> None:
    """The media worker ended a viewer session (ICE failure, publisher gone): forget it."""
    app[VIEWERS].pop(session_id, None)


def add_routes(app: web.Application) -> None:
    app[VIEWERS] = {}
    add_session_routes(app, "/whep", view, stop_viewing, patch)
