"""The Socket.IO server: in-process rooms by default, python-socketio's Redis manager when scaled out."""

from __future__ import annotations

import logging

import socketio

from config.schema import Settings
from signaling.backpressure import BoundedServer

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 96 * 1024
"""Room for a 64 KiB SDP offer plus its envelope, so an oversized offer gets an error ack (the handler checks
the 64 KiB) instead of the connection being dropped; anything larger still is."""


def create_socketio(settings: Settings, redis_password: str | None) -> socketio.AsyncServer:
    manager = None
    if settings.redis.url:
        manager = socketio.AsyncRedisManager(settings.redis.url, channel="pinstream-socketio", logger=logger,
                                             redis_options={"password": redis_password} if redis_password else None)
    return BoundedServer(async_mode="aiohttp", client_manager=manager, logger=logger,
                         engineio_logger=False, cors_allowed_origins=settings.server.cors_origins,
                         max_http_buffer_size=MAX_MESSAGE_BYTES, max_queued=settings.overlay.client_queue_max)
