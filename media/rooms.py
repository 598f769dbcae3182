"""Rooms of publishers and viewers inside a media worker: the `MediaControl` implementation.

A publisher session's tracks each feed a `TrackHub`; a viewer session adds one leg per track to those hubs
once its DTLS transport is up. SDP in, SDP out: nothing here knows about HTTP, users or products.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.clock import current_ntp_time
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from config.schema import MediaSettings
from media import forwarding
from media.api import MediaError, MediaEvent, SessionAnswer
from media.codecs import FORWARDABLE
from media.hub import TrackHub, ViewerLeg
from media.tap import Taps

logger = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024
SENDER_REPORT_SYNC_SECONDS = 1.0


@dataclass(eq=False)
class Source:
    """One track of a publisher: where its packets come from and how to ask it for a keyframe or a resend."""

    kind: str
    receiver: RTCRtpReceiver
    payload_type: int
    rtx_payload_type: int | None
    media_ssrc: int = 0

    def request_keyframe(self) -> None:
        if self.media_ssrc:
            _spawn(forwarding.send_picture_loss(self.receiver, self.media_ssrc))

    def nack(self, lost: list[int]) -> None:
        if self.media_ssrc:
            _spawn(forwarding.send_nack(self.receiver, self.media_ssrc, lost))


@dataclass(eq=False)
class PublisherSession:
    id: str
    room: str
    pc: RTCPeerConnection
    sources: dict[str, Source] = field(default_factory=dict)
    packets: int = 0
    """Packets received on any of its tracks; the housekeeping sweep notices when it stops moving."""
    quiet_since: float = field(default_factory=time.monotonic)
    """When `packets` was last seen to change (it counts as fresh when it opens)."""
    _seen_packets: int = 0


@dataclass(eq=False)
class ViewerSession:
    id: str
    room: str
    pc: RTCPeerConnection
    transceivers: dict[str, RTCRtpTransceiver] = field(default_factory=dict)
    legs: list[tuple[TrackHub, ViewerLeg, RTCRtpSender]] = field(default_factory=list)


@dataclass(eq=False)
class Room:
    """Viewers attach to the room's outputs, not to a publisher, so they outlive a publisher reconnecting
    or the host switching feeds. The room lasts until `end_room` or until nobody is left in it."""

    name: str
    outputs: dict[str, TrackHub] = field(default_factory=dict)
    publishers: dict[str, PublisherSession] = field(default_factory=dict)
    program: str | None = None
    """The publisher session the outputs carry (the program feed)."""
    viewers: dict[str, ViewerSession] = field(default_factory=dict)


class MediaService:
    """Implements `media.api.MediaControl` inside the worker process."""

    def __init__(self, settings: MediaSettings, emit: Callable[[MediaEvent], None]) -> None:
        forwarding.check_aiortc()
        self.settings = settings
        self.emit = emit
        self.rooms: dict[str, Room] = {}
        self._sessions: dict[str, PublisherSession | ViewerSession] = {}
        self._configured = False
        self._report_task: asyncio.Task[None] | None = None
        self.taps = Taps()

    def _configure(self) -> None:
        if not self._configured:
            ice = self.settings.ice
            forwarding.configure_ice(ice.host_addresses, ice.port_min, ice.port_max)
            self._report_task = asyncio.get_running_loop().create_task(self._housekeeping())
            self._configured = True

    # --- publishers ----------------------------------------------------------------------------------------

    async def open_publisher(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        self._configure()
        kinds = _offered_kinds(offer_sdp, wanted_direction="send")
        current = self.rooms.get(room)
        outputs = current.outputs if current is not None else {}
        pc = RTCPeerConnection()
        transceivers = {}
        for kind in kinds:
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            # Once a room has outputs, every source must match them so viewers can switch without renegotiating.
            output = outputs.get(kind)
            transceiver.setCodecPreferences([_capability(kind, output)] if output else FORWARDABLE[kind])
            transceivers[kind] = transceiver
        answer = await _negotiate(pc, offer_sdp, "no_forwardable_codec",
                                  "offer has no codec this room can forward (Opus; H.264 packetization-mode 1 "
                                  "constrained baseline; VP8; the same as the room's earlier publishers)")
        session = PublisherSession(session_id, room, pc)
        current = self.rooms.setdefault(room, Room(room))
        for kind, transceiver in transceivers.items():
            codec = transceiver._codecs[0]
            assert codec.payloadType is not None  # negotiated codecs always carry one
            if kind not in current.outputs:
                current.outputs[kind] = TrackHub(kind, codec.mimeType, codec.clockRate, lambda: None,
                                                 dict(codec.parameters))
            source = Source(kind, transceiver.receiver, codec.payloadType, _rtx_payload_type(transceiver))
            session.sources[kind] = source
            self._divert(current, session, source)
        current.publishers[session_id] = session
        if current.program is None:
            self._switch_program(current, session)
        self._register(session)
        logger.info("publisher joined", extra={"room": room, "session_id": session_id,
                                               "codecs": _codec_names(transceivers)})
        return SessionAnswer(session_id, self._announce(answer), _codec_names(transceivers))

    def _divert(self, room: Room, session: PublisherSession, source: Source) -> None:
        output = room.outputs[source.kind]

        def on_packet(packet: RtpPacket) -> None:
            payload, sequence = packet.payload, packet.sequence_number
            if packet.payload_type != source.payload_type:
                if packet.payload_type != source.rtx_payload_type or len(payload) < 2:
                    return  # another stream: not forwarded as media
                sequence, payload = int.from_bytes(payload[:2], "big"), payload[2:]  # RFC 4588 unwrap
            else:
                source.media_ssrc = packet.ssrc
            session.packets += 1
            if room.program == session.id:
                output.forward(sequence, bool(packet.marker), packet.timestamp, payload)

        forwarding.divert_received_rtp(source.receiver, on_packet)

    def _switch_program(self, room: Room, session: PublisherSession | None) -> None:
        room.program = session.id if session is not None else None
        if session is None:
            return
        for kind, output in room.outputs.items():
            source = session.sources.get(kind)
            if source is not None:
                output.switch_source(source.request_keyframe, source.nack)
        self.emit(MediaEvent("track.up", room.name, session.id, "publisher", {"program": True}))

    async def set_program_feed(self, room: str, session_id: str) -> None:
        current = self.rooms.get(room)
        publisher = current.publishers.get(session_id) if current is not None else None
        if current is None or publisher is None:
            raise MediaError("publisher_not_found", f"no publisher {session_id!r} in room {room!r}", 404)
        if current.program != session_id:
            self._switch_program(current, publisher)

    # --- viewers -------------------------------------------------------------------------------------------

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str) -> SessionAnswer:
        self._configure()
        kinds = _offered_kinds(offer_sdp, wanted_direction="recv")
        current = self.rooms.get(room)
        if current is None or not current.outputs:
            raise MediaError("not_live", f"room {room!r} is not live", 404)
        pc = RTCPeerConnection()
        session = ViewerSession(session_id, room, pc)
        for kind in kinds:
            output = current.outputs.get(kind)
            if output is None:
                continue
            transceiver = pc.addTransceiver(forwarding.IdleTrack(kind), direction="sendonly")
            transceiver.setCodecPreferences([_capability(kind, output), *_rtx_capabilities(kind)])
            session.transceivers[kind] = transceiver
        answer = await _negotiate(pc, offer_sdp, "viewer_codec_unsupported",
                                  f"the viewer cannot receive the room's codecs "
                                  f"({', '.join(h.mime_type for h in current.outputs.values())})")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                self._attach_viewer(session)
                self.emit(MediaEvent("session.connected", room, session_id, "viewer"))

        current.viewers[session_id] = session
        self._register(session)
        return SessionAnswer(session_id, self._announce(answer), _codec_names(session.transceivers))

    def _attach_viewer(self, session: ViewerSession) -> None:
        room = self.rooms.get(session.room)
        if room is None or session.legs or session.id not in room.viewers:
            return
        for kind, transceiver in session.transceivers.items():
            output = room.outputs.get(kind)
            if output is None or not transceiver._codecs:
                continue
            sender = transceiver.sender
            payload_type = transceiver._codecs[0].payloadType
            assert payload_type is not None  # negotiated codecs always carry one
            leg = ViewerLeg(payload_type=payload_type, ssrc=sender._ssrc, send=forwarding.packet_sender(sender),
                            initial_sequence=random.randrange(0x10000), rtx_payload_type=_rtx_payload_type(transceiver),
                            rtx_ssrc=sender._rtx_ssrc, rtx_sequence=random.randrange(0x10000))
            forwarding.route_feedback(sender, output.request_keyframe, functools.partial(_retransmit, output, leg))
            output.add_leg(leg)
            session.legs.append((output, leg, sender))

    # --- both ----------------------------------------------------------------------------------------------

    def _register(self, session: PublisherSession | ViewerSession) -> None:
        self._sessions[session.id] = session
        kind = "publisher" if isinstance(session, PublisherSession) else "viewer"

        @session.pc.on("connectionstatechange")
        async def on_state() -> None:
            if session.pc.connectionState in ("failed", "closed"):
                await self.close_session(session.id)
            elif session.pc.connectionState == "connected" and kind == "publisher":
                self.emit(MediaEvent("session.connected", session.room, session.id, "publisher"))

    async def close_session(self, session_id: str) -> bool:
        """End one session. A publisher leaving does not end its viewers: they wait for it (or another
        publisher) on the same connections until the room ends."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        room = self.rooms.get(session.room)
        if isinstance(session, PublisherSession):
            kind = "publisher"
            if room is not None:
                room.publishers.pop(session_id, None)
                if room.program == session_id:
                    self._switch_program(room, next(iter(room.publishers.values()), None))
        else:
            kind = "viewer"
            for output, leg, _sender in session.legs:
                output.remove_leg(leg)
            if room is not None:
                room.viewers.pop(session_id, None)
        if room is not None and not room.publishers and not room.viewers:
            self._drop_room(room)
        await session.pc.close()
        self.emit(MediaEvent("session.closed", session.room, session_id, kind))  # type: ignore[arg-type]
        logger.info("session closed", extra={"room": session.room, "session_id": session_id, "kind": kind})
        return True

    async def end_room(self, room: str) -> None:
        """The show is over: close every session of the room."""
        current = self.rooms.get(room)
        if current is None:
            return
        for session_id in [*current.viewers, *current.publishers]:
            await self.close_session(session_id)
        self._drop_room(current)

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        current = self.rooms.get(room)
        return self.taps.open(room, current.outputs if current is not None else None, tap_id, host, port)

    async def close_tap(self, tap_id: str) -> bool:
        return self.taps.close(tap_id)

    def _drop_room(self, room: Room) -> None:
        self.taps.room_ended(room.name)
        for output in room.outputs.values():
            output.close()
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    async def request_keyframe(self, room: str) -> None:
        current = self.rooms.get(room)
        if current is None or current.program is None:
            raise MediaError("not_live", f"room {room!r} is not live", 404)
        video = current.outputs.get("video")
        if video is not None:
            video.request_keyframe()

    async def stats(self) -> dict[str, Any]:
        rooms = {}
        for name, room in self.rooms.items():
            rooms[name] = {
                "program": room.program,
                "publishers": sorted(room.publishers),
                "viewers": len(room.viewers),
                "tracks": {kind: {"codec": hub.mime_type, "packets_in": hub.packets_in,
                                  "packets_out": hub.packets_out, "bytes_out": hub.bytes_out,
                                  "keyframe_requests": hub.keyframe_requests_upstream,
                                  "nacks_upstream": hub.nacks_upstream, "switches": hub.switches,
                                  "retransmitted": sum(leg.retransmitted for leg in hub.legs),
                                  "legs": len(hub.legs)}
                           for kind, hub in room.outputs.items()},
            }
        return {"rooms": rooms, "sessions": len(self._sessions)}

    async def close(self) -> None:
        if self._report_task is not None:
            self._report_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._report_task
        for session_id in list(self._sessions):
            await self.close_session(session_id)
        self.taps.close_all()

    def _announce(self, description: RTCSessionDescription) -> str:
        return forwarding.announce_public_address(description.sdp, self.settings.ice.public_address)

    async def _housekeeping(self) -> None:
        """Off the packet path, once a second: copy each leg's counters into its sender for aiortc's RTCP
        sender reports, and close publishers that went silent (a packet counter that stopped moving, so the
        packet path pays one integer increment rather than a clock read)."""
        while True:
            await asyncio.sleep(SENDER_REPORT_SYNC_SECONDS)
            ntp = current_ntp_time()
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if isinstance(session, ViewerSession):
                    for _hub, leg, sender in session.legs:
                        forwarding.update_sender_report(sender, leg.packets, leg.octets, leg.last_timestamp, ntp)
                    continue
                if session.packets != session._seen_packets:
                    session._seen_packets, session.quiet_since = session.packets, now
                elif (session.pc.connectionState == "connected"
                      and now - session.quiet_since > self.settings.silence_timeout_seconds):
                    logger.info("publisher silent, closing", extra={"room": session.room, "session_id": session.id})
                    await self.close_session(session.id)

    async def set_keyframe_cadence(self, room: str, seconds: str) -> None:
        try:
            interval = float(seconds)
        except ValueError:
            raise MediaError("bad_request", "seconds must be a number", 400, "seconds") from None
        if not 0 <= interval <= 3600:
            raise MediaError("bad_request", "seconds must be between 0 and 3600", 400, "seconds")
        current = self.rooms.get(room)
        if current is None:
            raise MediaError("not_live", f"room {room!r} is not live", 404)
        video = current.outputs.get("video")
        if video is not None:
            video.set_keyframe_cadence(interval)


def _offered_kinds(offer_sdp: str, wanted_direction: str) -> list[str]:
    """Validate an offer: size, syntax, at most one audio and one video section, the right direction."""
    if len(offer_sdp.encode()) > MAX_SDP_BYTES:
        raise MediaError("sdp_too_large", f"SDP over {MAX_SDP_BYTES} bytes", 413)
    try:
        description = SessionDescription.parse(offer_sdp)
    except (ValueError, IndexError, KeyError) as exc:
        raise MediaError("bad_sdp", f"malformed SDP offer: {exc}", 400) from None
    kinds = [media.kind for media in description.media]
    if not kinds:
        raise MediaError("bad_sdp", "the offer has no media section", 400)
    for kind in kinds:
        if kind not in ("audio", "video"):
            raise MediaError("unsupported_media", f"{kind} sections are not supported", 400)
    if kinds.count("audio") > 1 or kinds.count("video") > 1:
        raise MediaError("too_many_tracks", "one audio and one video track per session", 400)
    for media in description.media:
        direction = media.direction or "sendrecv"
        if wanted_direction not in direction:  # "send" fits sendonly/sendrecv, "recv" recvonly/sendrecv
            raise MediaError("bad_direction", f"{media.kind} is {direction}; expected {wanted_direction}", 400)
    return kinds


async def _negotiate(pc: RTCPeerConnection, offer_sdp: str, code: str, message: str) -> RTCSessionDescription:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except (OperationError, InvalidAccessError, InvalidStateError, InternalError, ValueError) as exc:
        await pc.close()
        if isinstance(exc, OperationError):
            raise MediaError(code, message, 422) from None
        raise MediaError("bad_sdp", f"offer refused: {exc}", 400) from None
    description = pc.localDescription
    assert description is not None
    return description


def _retransmit(output: TrackHub, leg: ViewerLeg, lost: list[int]) -> None:
    output.retransmit(leg, lost)


def _rtx_payload_type(transceiver: RTCRtpTransceiver) -> int | None:
    media = transceiver._codecs[0].payloadType if transceiver._codecs else None
    for codec in transceiver._codecs:
        if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") == media:
            return codec.payloadType
    return None


def _rtx_capabilities(kind: str) -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower().endswith("/rtx")]


def _spawn(work: Awaitable[None]) -> None:
    asyncio.ensure_future(work).add_done_callback(_log_failure)


def _capability(kind: str, hub: TrackHub) -> RTCRtpCodecCapability:
    for capability in FORWARDABLE[kind]:
        if capability.mimeType.lower() == hub.mime_type.lower() and (
                kind == "audio" or capability.parameters == hub.codec_parameters):
            return capability
    raise MediaError("no_forwardable_codec", f"{hub.mime_type} is not forwardable", 422)


def _codec_names(transceivers: dict[str, RTCRtpTransceiver]) -> list[str]:
    return [t._codecs[0].mimeType for t in transceivers.values() if t._codecs]


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("RTCP feedback to a publisher failed", exc_info=task.exception())
