"""Mounts WHIP, WHEP and the live-room namespace on the application and keeps the database (and the live
rooms) in step with what the media worker says."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import socketio
from aiohttp import web

from media.api import MediaEvent
from rooms.live import END_IF_IDLE_JOB, open_publisher_sessions
from signaling import whep, whip
from signaling.background import spawn
from signaling.edge import EDGE, EdgeContext
from signaling.live_room import LiveRoom
from signaling.overlay_room import Overlay
from store.jobs import Handler

logger = logging.getLogger(__name__)

LIVE_ROOM = web.AppKey("live_room", LiveRoom)


def add_edge(app: web.Application, edge: EdgeContext, job_handlers: dict[str, Handler],
             sio: socketio.AsyncServer) -> Callable[[MediaEvent], None]:
    """Add the routes, the live-room namespace and the show-ending job; returns the listener to subscribe to
    media events."""
    live = LiveRoom(sio, edge, bus=edge.bus)
    live.register()
    Overlay(live).register()
    app[LIVE_ROOM] = live
    job_handlers[END_IF_IDLE_JOB] = functools.partial(whip.end_show_when_idle, edge, on_ended=live.show_ended)
    app[EDGE] = edge
    whip.add_routes(app)
    whep.add_routes(app)
    def on_media_event(event: MediaEvent) -> None:
        live.media_event(event)
        if event.type == "session.closed" and event.session_id is not None:
            if event.kind == "publisher":
                spawn(_publisher_left(edge, live, event.session_id, event.room))
            else:
                whep.viewer_closed(app, event.session_id)
        elif event.type == "worker.restarted":
            app[whep.VIEWERS].clear()
            spawn(_all_publishers_gone(edge, live))

    return on_media_event


async def _publisher_left(edge: EdgeContext, live: LiveRoom, session_id: str, room: str | None) -> None:
    """The database first (it schedules the end of the show), then the room's viewers."""
    await whip.publisher_gone(edge, session_id)
    if room is not None:
        await live.publisher_closed(room, session_id)


async def _all_publishers_gone(edge: EdgeContext, live: LiveRoom) -> None:
    """A restarted worker holds no sessions: close them all; shows end after the grace period unless their
    publishers reconnect."""
    async with edge.database().read() as session:
        gone = await open_publisher_sessions(session)
    for publisher in gone:
        await whip.publisher_gone(edge, publisher.id)
    await live.media_restarted()
    if gone:
        logger.warning("media worker restarted: publishers must reconnect", extra={"sessions": len(gone)})
