"""The floor of the overlay fan-out benchmark: a bare python-socketio server doing the same broadcast.

    python bench/bare_socketio_server.py PORT

A `/live` namespace whose `join` puts the socket in the room and acks `{"ok": true}`; `POST /fire?available=N`
emits `stock.changed` with that value to the room at once. No database, no bus, no overlay: what Socket.IO
itself costs to deliver one event to every socket of a room on this machine.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import socketio
from aiohttp import web

NAMESPACE = "/live"
ROOM = "room:bench"


def build() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)

    async def join(sid: str, _data: Any = None) -> dict[str, Any]:
        await sio.enter_room(sid, ROOM, namespace=NAMESPACE)
        return {"ok": True}

    async def fire(request: web.Request) -> web.Response:
        available = int(request.query["available"])
        # The same shape and size as Pinstream's event, so both put the same bytes on the wire.
        await sio.emit("stock.changed", {"room": "bench", "product_id": 1, "available": available, "sold": 0,
                                         "state": "in_stock", "variants": [{"variant_id": 1, "available": available}],
                                         "seq": available, "server_time_ms": int(time.time() * 1000)},
                       room=ROOM, namespace=NAMESPACE)
        return web.json_response({"ok": True})

    sio.on("connect", lambda _sid, _environ, _auth=None: None, namespace=NAMESPACE)
    sio.on("join", join, namespace=NAMESPACE)
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_post("/fire", fire)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    web.run_app(build(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
