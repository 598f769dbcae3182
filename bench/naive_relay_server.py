"""The re-encode reference: aiortc out of the box, as the benchmark's "naive" target.

    python bench/naive_relay_server.py --host ADDR --port PORT --ice-address ADDR

One publisher: `POST /publish` (SDP offer, WHIP-like: 201, Location, SDP answer). Its tracks are decoded once
by aiortc's receiver and shared through `MediaRelay`; every viewer (`POST /view`, WHEP-like) gets its own
`RTCRtpSender`, which encodes each frame again for that viewer: aiortc's default path, what Pinstream's
forwarding replaces. Subscriptions are unbuffered (`buffered=False`): a viewer whose encoder falls behind
skips frames instead of queueing them without bound, so an overloaded relay shows up as frames not delivered
rather than as latency growing through the run. `DELETE` on a Location ends that session. Only --ice-address
is offered to ICE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
from pathlib import Path

from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.media_clients import limit_host_addresses, new_peer_connection

logger = logging.getLogger("bench.naive")


class NaiveRelay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.sources: dict[str, MediaStreamTrack] = {}
        self.sessions: dict[str, RTCPeerConnection] = {}
        self.drains: list[asyncio.Task[None]] = []
        self.ids = itertools.count(1)

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Keep the relay reading the publisher from the start, so the first viewer gets no stale backlog."""
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.sources[track.kind] = track
        self.drains.append(asyncio.create_task(self._drain(self.relay.subscribe(track, buffered=False))))

    async def _answer(self, pc: RTCPeerConnection, offer: str, kind: str) -> web.Response:
        await pc.setLocalDescription(await pc.createAnswer())
        session = f"{kind}-{next(self.ids)}"
        self.sessions[session] = pc
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/session/{session}"})

    async def publish(self, request: web.Request) -> web.Response:
        pc = new_peer_connection()
        pc.on("track", self._on_track)
        offer = await request.text()
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        return await self._answer(pc, offer, "publish")

    async def view(self, request: web.Request) -> web.Response:
        if set(self.sources) != {"audio", "video"}:
            raise web.HTTPNotFound(text="not live")
        pc = new_peer_connection()
        offer = await request.text()
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        for transceiver in pc.getTransceivers():
            track = self.relay.subscribe(self.sources[transceiver.kind], buffered=False)
            pc.addTrack(track)  # the codec is the viewer's first choice (VP8 and Opus from the bench's viewers)
        return await self._answer(pc, offer, "view")

    async def delete(self, request: web.Request) -> web.Response:
        pc = self.sessions.pop(request.match_info["session"], None)
        if pc is None:
            raise web.HTTPNotFound()
        await pc.close()
        return web.Response(status=200)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "live": set(self.sources) == {"audio", "video"},
                                  "sessions": len(self.sessions)})

    async def close(self, _app: web.Application) -> None:
        for task in self.drains:
            task.cancel()
        await asyncio.gather(*(pc.close() for pc in self.sessions.values()), return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ice-address", required=True, help="the only ICE host candidate address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    limit_host_addresses([args.ice_address])
    relay = NaiveRelay()
    app = web.Application()
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/view", relay.view)
    app.router.add_delete("/session/{session}", relay.delete)
    app.router.add_get("/healthz", relay.health)
    app.on_shutdown.append(relay.close)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
