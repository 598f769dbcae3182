"""The host's stream key, for publishing from an encoder."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from accounts.stream_keys import rotate_stream_key
from web.api.common import principal, runtime
from web.api.registry import Api

api = Api()


class StreamKeyOut(BaseModel):
    stream_key: str
    """Shown this once; only its hash is kept. Rotating again invalidates it."""


@api.route("POST", "/api/me/stream-key", summary="Replace your stream key and show the new one once",
           tag="rooms", access="host", response=StreamKeyOut, status=201, rate_limit="write")
async def rotate(request: web.Request) -> StreamKeyOut:
    async with runtime(request).db.write() as session:
        key = await rotate_stream_key(session, principal(request).user_id or 0)
    return StreamKeyOut(stream_key=key)
