"""Benchmark clients: one publisher sending pre-encoded media, and viewers that count frames without decoding.

    python -m bench.media_clients publish --mode whip|janus --url URL ... --out FILE
    python -m bench.media_clients view --mode whep|janus --url URL --count N ... --out FILE

Each process prints JSON lines on stdout ({"event": "ready", ...}, then {"event": "done"}), takes "stop" (or end
of file) on stdin, and stops by itself after --max-seconds whatever happens. Results go to --out as JSON.

Coupling to aiortc internals (aiortc 1.16; re-check when upgrading, see ../shared/notes/aiortc-internals.md):
- Publisher: `RTCRtpSender._run_rtp` only packetises (codec `pack()`, no encoder) when the track's `recv()`
  returns an `av.Packet`; the RTP timestamp is a random per-sender origin plus the packet's pts in 1/90000. The
  origin is read back from the sender's private `_RTCRtpSender__rtp_timestamp` (the last timestamp sent), so
  the bench can key each frame's send time by the RTP timestamp a forwarding server passes on unchanged.
  A PLI or FIR reaching a sender calls its `_send_keyframe()`, which only sets a flag for an encoder; we replace
  that attribute on each video sender so the request reaches the paced source, which then jumps to the next
  keyframe of the file, as a live encoder would produce one (the issue's join-to-first-frame figure needs it).
- Viewers: `RTCDtlsTransport` hands every routed RTP packet to the receiver's `_handle_rtp_packet(packet,
  arrival_time_ms)`, looked up on the instance. We replace that attribute on each receiver (before DTLS can
  deliver anything) with a recorder of (RTP timestamp, arrival time, packets) per frame, the marker bit ending
  a frame. Nothing is depacketised, jitter-buffered or decoded, no NACK, PLI or receiver report is sent, and
  the receiver's idle decoder thread never gets work.
- ICE: `aioice.ice.get_host_addresses` is replaced so that only the bench's own addresses are offered (aioice
  otherwise offers every interface address and skips 127.0.0.1), and every peer connection gets an empty ICE
  server list (aiortc's default is a public STUN server, which must never be contacted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import av
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

from bench.janus_client import JanusSession
from bench.media_files import AUDIO_FRAME_MS, FPS, EncodedMedia, load_media

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
FRAME_TICKS = VIDEO_CLOCK // FPS
# Frame durations vary by up to +/- this many ticks (0.08 ms), from a fixed seed: the sequence of timestamp
# differences becomes a fingerprint, so frames can still be matched when a server rewrites timestamps.
FRAME_JITTER_TICKS = 7
PTS_SEED = 20240601
CONNECT_TIMEOUT_S = 30.0
JANUS_ROOM = 1234
WHEP_ATTEMPTS = 20

logger = logging.getLogger("bench.clients")


# ---------------------------------------------------------------------------------------------- ICE set-up


def limit_host_addresses(addresses: list[str]) -> None:
    """Offer only these addresses as ICE host candidates in this process (aioice module global)."""
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [address for address in fixed if (":" in address and use_ipv6) or (":" not in address and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def new_peer_connection() -> RTCPeerConnection:
    """No ICE servers at all: aiortc's default would be a public STUN server."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def wait_connected(pc: RTCPeerConnection, limit_s: float = CONNECT_TIMEOUT_S) -> float:
    """Wait until the peer connection is connected; returns the monotonic time it was seen connected."""
    deadline = time.monotonic() + limit_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise ConnectionError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not connected after {limit_s:.0f}s (state {pc.connectionState})")
        await asyncio.sleep(0.01)
    return time.monotonic()


def prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([codec for codec in codecs if codec.mimeType.lower() == mime_type.lower()])


# --------------------------------------------------------------------------------------------- publisher


def video_pts_deltas(seed: int = PTS_SEED) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: FRAME_TICKS + rng.randint(-FRAME_JITTER_TICKS, FRAME_JITTER_TICKS)


class PacketTrack(MediaStreamTrack):
    """A track whose `recv()` hands pre-encoded `av.Packet`s to aiortc's sender, which then only packetises."""

    def __init__(self, kind: str, clock: int, leg: str) -> None:
        super().__init__()
        self.kind = kind
        self.leg = leg
        self.time_base = fractions.Fraction(1, clock)
        self.sender: RTCRtpSender | None = None
        self.rtp_origin: int | None = None
        self._queue: asyncio.Queue[av.Packet[Any]] = asyncio.Queue()
        self._active = False
        self._last_pts: int | None = None

    def push(self, data: bytes, pts: int) -> None:
        if self._active:  # frames from before the sender started would go out as a stale burst
            packet = av.Packet(data)
            packet.pts = pts
            packet.time_base = self.time_base
            self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet[Any]:
        self._active = True
        if self.rtp_origin is None and self._last_pts is not None and self.sender is not None:
            # The sender sent the previous packet with timestamp origin + pts (see the module docstring).
            sent = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", None)
            if isinstance(sent, int) and sent:
                self.rtp_origin = (sent - self._last_pts) % 2**32
        packet = await self._queue.get()
        self._last_pts = packet.pts
        return packet


class PacedSource:
    """Plays the pre-encoded media in real time, looping, into every subscribed track; logs each video frame."""

    def __init__(self, media: EncodedMedia) -> None:
        self.media = media
        self.tracks: list[PacketTrack] = []
        self.video_log: list[tuple[int, float, bool]] = []
        """(pts in 1/90000, monotonic send time, keyframe) per video frame."""
        self.keyframe_requests: list[float] = []
        """Monotonic times of PLI/FIR received on any leg."""
        self.start = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._want_keyframe = False
        self._keyframe_positions = [i for i, (_, keyframe) in enumerate(media.video) if keyframe]

    def request_keyframe(self) -> None:
        """Stands in for `RTCRtpSender._send_keyframe` (see the module docstring)."""
        self.keyframe_requests.append(time.monotonic())
        self._want_keyframe = True

    def subscribe(self, kind: str, leg: str) -> PacketTrack:
        track = PacketTrack(kind, VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK, leg)
        self.tracks.append(track)
        return track

    def begin(self) -> None:
        self.start = time.monotonic()
        self._tasks = [asyncio.create_task(self._run_video()), asyncio.create_task(self._run_audio())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sleep_until(self, when: float) -> None:
        delay = when - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run_video(self) -> None:
        frames = self.media.video
        next_delta = video_pts_deltas()
        pts = 0
        index = 0
        while True:
            await self._sleep_until(self.start + pts / VIDEO_CLOCK)
            if self._want_keyframe:
                self._want_keyframe = False
                position = index % len(frames)
                if not frames[position][1]:
                    later = [p for p in self._keyframe_positions if p > position]
                    index += (later[0] if later else self._keyframe_positions[0] + len(frames)) - position
            data, keyframe = frames[index % len(frames)]
            self.video_log.append((pts, time.monotonic(), keyframe))
            for track in self.tracks:
                if track.kind == "video":
                    track.push(data, pts)
            pts += next_delta()
            index += 1

    async def _run_audio(self) -> None:
        packets = self.media.audio
        step = AUDIO_CLOCK * AUDIO_FRAME_MS // 1000
        index = 0
        while True:
            pts = index * step
            await self._sleep_until(self.start + pts / AUDIO_CLOCK)
            for track in self.tracks:
                if track.kind == "audio":
                    track.push(packets[index % len(packets)], pts)
            index += 1


def add_publish_tracks(pc: RTCPeerConnection, source: PacedSource, leg: str) -> list[PacketTrack]:
    """Send-only Opus and VP8 transceivers fed by the source (for the offering side)."""
    tracks = []
    for kind, mime in (("audio", "audio/opus"), ("video", "video/VP8")):
        track = source.subscribe(kind, leg)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        prefer_codec(transceiver, mime)
        track.sender = transceiver.sender
        if kind == "video":
            route_keyframe_requests(transceiver.sender, source)
        tracks.append(track)
    return tracks


def route_keyframe_requests(sender: RTCRtpSender, source: PacedSource) -> None:
    sender._send_keyframe = source.request_keyframe  # type: ignore[method-assign]


class NotLiveYet(ConnectionError):
    """WHEP 404/503: nothing to view (yet)."""


async def whip_exchange(http: aiohttp.ClientSession, url: str, offer: str,
                        bearer: str | None = None) -> tuple[str, str]:
    """RFC 9725 (WHIP) and the WHEP draft: POST the offer, expect 201, a Location and the SDP answer.

    ICE servers the server advertises in `Link` headers are ignored on purpose: the bench talks to nothing but
    its own namespace (or loopback), and every candidate it needs is a host candidate."""
    headers = {"Content-Type": "application/sdp"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    async with http.post(url, data=offer.encode(), headers=headers,
                         timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S)) as response:
        body = await response.text()
        if response.status in (404, 503) and not bearer:
            raise NotLiveYet(f"POST {url}: {response.status} {body[:300]}")
        if response.status != 201:
            raise ConnectionError(f"POST {url}: {response.status} {body[:300]}")
        location = response.headers.get("Location")
        if not location:
            raise ConnectionError(f"POST {url}: 201 without a Location header")
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("application/sdp"):
            raise ConnectionError(f"POST {url}: answer has Content-Type {content_type!r}, not application/sdp")
        return body, urljoin(url, location)


async def delete_session(http: aiohttp.ClientSession, location: str) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.delete(location, timeout=aiohttp.ClientTimeout(total=5)):
            pass


class P2PEndpoint:
    """The publisher's own WHEP-like endpoint: a viewer connecting here gets the media directly, no server."""

    def __init__(self, source: PacedSource) -> None:
        self.source = source
        self.peers: list[RTCPeerConnection] = []
        self.tracks: list[PacketTrack] = []

    async def handle(self, request: web.Request) -> web.Response:
        pc = new_peer_connection()
        self.peers.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        leg = "p2p" if len(self.peers) == 1 else f"p2p-{len(self.peers)}"
        for kind in ("audio", "video"):
            track = self.source.subscribe(kind, leg)
            track.sender = pc.addTrack(track)
            if kind == "video":
                route_keyframe_requests(track.sender, self.source)
            self.tracks.append(track)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/p2p/{len(self.peers)}"})

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.peers), return_exceptions=True)


# ------------------------------------------------------------------------------------------------ viewers


def vp8_frame_start(payload: bytes) -> tuple[bool, bool]:
    """(first packet of a frame, keyframe) from the VP8 payload descriptor (RFC 7741 section 4.2)."""
    if not payload:
        return False, False
    first = payload[0]
    if not first & 0x10 or first & 0x07:
        return False, False
    index = 1
    if first & 0x80:
        extension = payload[1] if len(payload) > 1 else 0
        index = 2
        if extension & 0x80:
            index += 2 if len(payload) > index and payload[index] & 0x80 else 1
        if extension & 0x40:
            index += 1
        if extension & 0x30:
            index += 1
    return True, len(payload) > index and not payload[index] & 0x01


class FrameRecorder:
    """Stands in for `RTCRtpReceiver._handle_rtp_packet`: records frames, decodes nothing."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float, int, int, int, bool, bool]] = []
        """(RTP timestamp, arrival of the marker packet, packets, first seq, marker seq, start seen, key)."""
        self.audio_packets = 0
        self.other_ssrc_packets = 0
        self._ssrc: int | None = None
        self._timestamp: int | None = None
        self._first_seq = 0
        self._count = 0
        self._start_seen = False
        self._keyframe = False

    async def video(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        now = time.monotonic()
        if self._ssrc is None:
            self._ssrc = packet.ssrc
        elif packet.ssrc != self._ssrc:
            self.other_ssrc_packets += 1
            return
        if packet.timestamp != self._timestamp:
            self._timestamp = packet.timestamp
            self._first_seq = packet.sequence_number
            self._count = 0
            self._start_seen = False
            self._keyframe = False
        elif (packet.sequence_number - self._first_seq) % 65536 > 32768:
            self._first_seq = packet.sequence_number  # reordered: an earlier packet of this frame
        self._count += 1
        start, keyframe = vp8_frame_start(packet.payload)
        if start:
            self._start_seen = True
            self._keyframe = keyframe
        if packet.marker:
            self.frames.append((packet.timestamp, now, self._count, self._first_seq, packet.sequence_number,
                                self._start_seen, self._keyframe))
            self._timestamp = None

    async def audio(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.audio_packets += 1


def install_recorder(receivers: list[RTCRtpReceiver], kinds: list[str], recorder: FrameRecorder) -> None:
    """Replace each receiver's `_handle_rtp_packet` (see the module docstring)."""
    for receiver, kind in zip(receivers, kinds, strict=True):
        receiver._handle_rtp_packet = recorder.video if kind == "video" else recorder.audio  # type: ignore[method-assign]


class Viewer:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pc = new_peer_connection()
        self.recorder = FrameRecorder()
        self.connected_at: float | None = None
        self.requested_at = 0.0
        self.error: str | None = None
        self.location: str | None = None

    def result(self) -> dict[str, Any]:
        return {"frames": self.recorder.frames, "audio_packets": self.recorder.audio_packets,
                "other_ssrc_packets": self.recorder.other_ssrc_packets, "requested_at": self.requested_at,
                "connected_at": self.connected_at, "error": self.error}


async def view_whep(viewer: Viewer, http: aiohttp.ClientSession, url: str) -> None:
    pc = viewer.pc
    transceivers = [pc.addTransceiver(kind, direction="recvonly") for kind in ("audio", "video")]
    install_recorder([t.receiver for t in transceivers], [t.kind for t in transceivers], viewer.recorder)
    await pc.setLocalDescription(await pc.createOffer())
    for attempt in range(WHEP_ATTEMPTS):
        try:
            answer, viewer.location = await whip_exchange(http, url, pc.localDescription.sdp)
            break
        except NotLiveYet:
            if attempt == WHEP_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.25)  # the server may learn of the publisher's tracks just after it connected
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def view_janus(viewer: Viewer, janus: JanusSession, feed: int) -> None:
    pc = viewer.pc
    handle = await janus.attach()
    _, offer = await janus.message(handle, {"request": "join", "ptype": "subscriber", "room": JANUS_ROOM,
                                            "streams": [{"feed": feed}]})
    if offer is None:
        raise ConnectionError("Janus sent no offer to the subscriber")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
    transceivers = pc.getTransceivers()
    install_recorder([t.receiver for t in transceivers], [t.kind for t in transceivers], viewer.recorder)
    await pc.setLocalDescription(await pc.createAnswer())
    await janus.message(handle, {"request": "start"},
                        {"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False})


# ------------------------------------------------------------------------------------------ process plumbing


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def write_json(path: str, data: dict[str, Any]) -> None:
    await asyncio.to_thread(Path(path).write_text, json.dumps(data))


async def wait_for_stop(max_seconds: float) -> str:
    """Until "stop" or end of file on stdin, or the deadline: the process always stops by itself."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def read() -> str:
        while True:
            line = await reader.readline()
            if not line:
                return "eof"
            if line.strip() == b"stop":
                return "stop"

    try:
        return await asyncio.wait_for(read(), max_seconds)
    except TimeoutError:
        return "deadline"


async def run_publisher(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.max_seconds
    media = load_media(Path(args.media))
    source = PacedSource(media)
    source.begin()
    pc = new_peer_connection()
    tracks = add_publish_tracks(pc, source, "server")
    p2p = P2PEndpoint(source)
    app = web.Application()
    app.router.add_post("/p2p", p2p.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host_address, 0)
    await site.start()
    p2p_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    feed: int | None = None
    location: str | None = None
    janus: JanusSession | None = None
    reason = "failed"
    async with aiohttp.ClientSession() as http:
        try:
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            if args.mode == "janus":
                janus = JanusSession(http, args.url)
                await janus.create()
                handle = await janus.attach()
                data, jsep = await janus.message(
                    handle, {"request": "joinandconfigure", "room": JANUS_ROOM, "ptype": "publisher",
                             "display": "bench", "audio": True, "video": True},
                    {"type": "offer", "sdp": offer, "trickle": False})
                if jsep is None:
                    raise ConnectionError(f"Janus answered the publisher without SDP: {data}")
                feed = int(data["id"])
                answer = jsep["sdp"]
            else:
                answer, location = await whip_exchange(http, args.url, offer, args.bearer)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await wait_connected(pc)
            emit("ready", feed=feed, p2p_url=f"http://{args.host_address}:{p2p_port}/p2p")
            reason = await wait_for_stop(max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            emit("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            # Written even when connecting failed, so the orchestrator can tell what happened.
            origins = {track.leg: track.rtp_origin for track in [*tracks, *p2p.tracks] if track.kind == "video"}
            await write_json(args.out, {"video": source.video_log, "origins": origins, "stopped_by": reason,
                                        "keyframe_requests": source.keyframe_requests})
            await source.stop()
            if location:
                await delete_session(http, location)
            await asyncio.gather(pc.close(), p2p.close(), return_exceptions=True)
            if janus is not None:
                await janus.destroy()
            await runner.cleanup()
    emit("done", stopped_by=reason)


async def run_viewers(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.max_seconds
    viewers = [Viewer(index) for index in range(args.count)]
    async with aiohttp.ClientSession() as http:
        janus: JanusSession | None = None
        if args.mode == "janus":
            janus = JanusSession(http, args.url)
            await janus.create()

        async def connect(viewer: Viewer) -> None:
            await asyncio.sleep(viewer.index * args.stagger)
            viewer.requested_at = time.monotonic()
            try:
                if janus is not None:
                    await view_janus(viewer, janus, args.feed)
                else:
                    await view_whep(viewer, http, args.url)
                viewer.connected_at = await wait_connected(viewer.pc)
            except Exception as exc:
                viewer.error = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(connect(viewer) for viewer in viewers))
        connected = sum(viewer.connected_at is not None for viewer in viewers)
        errors = sorted({viewer.error for viewer in viewers if viewer.error})
        emit("ready", connected=connected, failed=len(viewers) - connected, errors=errors[:3])
        reason = await wait_for_stop(max(1.0, deadline - time.monotonic()))
        # Results are taken before closing: nothing after "stop" counts.
        await write_json(args.out, {"label": args.label, "viewers": [viewer.result() for viewer in viewers]})
        await asyncio.gather(*(delete_session(http, viewer.location) for viewer in viewers if viewer.location))
        await asyncio.gather(*(viewer.pc.close() for viewer in viewers), return_exceptions=True)
        if janus is not None:
            await janus.destroy()
    emit("done", stopped_by=reason)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.media_clients", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("publish", "view"):
        command = commands.add_parser(name)
        command.add_argument("--mode", required=True,
                             choices=("whip", "janus") if name == "publish" else ("whep", "janus"))
        command.add_argument("--url", required=True, help="WHIP/WHEP endpoint, or Janus's /janus base URL")
        command.add_argument("--host-address", required=True, help="the only ICE host candidate address")
        command.add_argument("--out", required=True, help="file for the results (JSON)")
        command.add_argument("--max-seconds", type=float, required=True, help="hard limit on the run")
    publish, view = commands.choices["publish"], commands.choices["view"]
    publish.add_argument("--media", required=True, help="directory of video.ivf and audio.ogg")
    publish.add_argument("--bearer", help="WHIP stream key")
    view.add_argument("--count", type=int, default=1)
    view.add_argument("--feed", type=int, help="Janus publisher id to subscribe to")
    view.add_argument("--label", default="viewers")
    view.add_argument("--stagger", type=float, default=0.03, help="seconds between viewer connections")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    limit_host_addresses([args.host_address])
    asyncio.run(run_publisher(args) if args.command == "publish" else run_viewers(args))


if __name__ == "__main__":
    main()
