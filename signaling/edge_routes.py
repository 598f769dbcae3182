"""Mounts WHIP and WHEP on the application and keeps the database in step with what the media worker says."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from media.api import MediaEvent
from rooms.live import END_IF_IDLE_JOB, open_publisher_sessions
from signaling import whep, whip
from signaling.edge import EDGE, EdgeContext
from store.jobs import Handler

logger = logging.getLogger(__name__)


def add_edge(app: web.Application, edge: EdgeContext,
             job_handlers: dict[str, Handler]) -> Callable[[MediaEvent], None]:
    """Add the routes and the show-ending job; returns the listener to subscribe to media events."""
    job_handlers[END_IF_IDLE_JOB] = functools.partial(whip.end_show_when_idle, edge)
    app[EDGE] = edge
    whip.add_routes(app)
    whep.add_routes(app)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_media_event(event: MediaEvent) -> None:
        if event.type == "session.closed" and event.session_id is not None:
            if event.kind == "publisher":
                spawn(whip.publisher_gone(edge, event.session_id))
            else:
                whep.viewer_closed(app, event.session_id)
        elif event.type == "worker.restarted":
            app[whep.VIEWERS].clear()
            spawn(_all_publishers_gone(edge))

    return on_media_event


async def _all_publishers_gone(edge: EdgeContext) -> None:
    """A restarted worker holds no sessions: close them all; shows end after the grace period unless their
    publishers reconnect."""
    async with edge.database().read() as session:
        gone = await open_publisher_sessions(session)
    for publisher in gone:
        await whip.publisher_gone(edge, publisher.id)
    if gone:
        logger.warning("media worker restarted: publishers must reconnect", extra={"sessions": len(gone)})
