"""Rooms of publishers and viewers inside a media worker: the `MediaControl` implementation.

A publisher's tracks ("audio", "video", "screen"; see `media.sections`) feed the room's outputs of the same
names while it is the program feed, and its own feed outputs when a viewer subscribed to it directly. A viewer
session adds one leg per received track to those outputs once its DTLS transport is up. Either kind of session
may renegotiate on its connection to add or remove tracks. SDP in, SDP out: nothing here knows about HTTP,
users or products.
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

from config.schema import MediaSettings
from media import forwarding
from media.api import MediaError, MediaEvent, SessionAnswer
from media.codecs import FORWARDABLE
from media.hub import TrackHub, ViewerLeg
from media.sections import Section, offered_sections, parse_feed
from media.tap import Taps

logger = logging.getLogger(__name__)

SENDER_REPORT_SYNC_SECONDS = 1.0
TAPPED = ("audio", "video")
BANDWIDTH_PERCENTILE = 0.1
"""The publisher is asked for what nine in ten of a track's viewers can take (never below the floor), so one
viewer on a bad link does not lower the picture for everyone."""


@dataclass(eq=False)
class Source:
    """One track of a publisher: where its packets come from and how to ask it for a keyframe or a resend."""

    name: str
    kind: str
    receiver: RTCRtpReceiver
    payload_type: int
    rtx_payload_type: int | None
    media_ssrc: int = 0
    active: bool = True
    """False while a renegotiation has taken the track away (its place in the SDP stays)."""
    bandwidth_cap: int | None = None
    """What this track's viewers can take (bit/s, from their REMB), or None when none said; caps the REMB the
    publisher receives, so it sees one aggregated picture instead of each viewer's."""

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
    transceivers: dict[str, RTCRtpTransceiver] = field(default_factory=dict)
    """Track name → its transceiver."""
    mids: dict[str, str] = field(default_factory=dict)
    """SDP mid → track name, fixed once negotiated."""
    sources: dict[str, Source] = field(default_factory=dict)
    feeds: dict[str, TrackHub] = field(default_factory=dict)
    """This publisher's own outputs, made when a viewer subscribes to it directly rather than to the program."""
    packets: int = 0
    """Packets received on any of its tracks; the housekeeping sweep notices when it stops moving."""
    quiet_since: float = field(default_factory=time.monotonic)
    """When `packets` was last seen to change (it counts as fresh when it opens)."""
    _seen_packets: int = 0
    opened_at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class ViewerSession:
    id: str
    room: str
    pc: RTCPeerConnection
    transceivers: dict[str, RTCRtpTransceiver] = field(default_factory=dict)
    mids: dict[str, str] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)
    """Track names the viewer's last offer receives."""
    legs: dict[str, tuple[TrackHub, ViewerLeg, RTCRtpSender]] = field(default_factory=dict)
    """Track name → its leg; a leg stays here (out of its hub) while its track is not wanted."""
    connected: bool = False
    opened_at: float = field(default_factory=time.monotonic)


Session = PublisherSession | ViewerSession


@dataclass(eq=False)
class Room:
    """Viewers attach to the room's outputs, not to a publisher, so they outlive a publisher reconnecting
    or the host switching feeds. The room lasts until `end_room` or until nobody is left in it."""

    name: str
    outputs: dict[str, TrackHub] = field(default_factory=dict)
    """Program outputs by track name: "audio", "video" and, once someone shared a screen, "screen"."""
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
        sections = offered_sections(offer_sdp, "publisher")
        current = self.rooms.get(room)
        session = PublisherSession(session_id, room, RTCPeerConnection())
        self._add_receivers(session, sections, current.outputs if current is not None else {})
        answer = await _negotiate(session.pc, offer_sdp, _PUBLISHER_CODECS, fresh=True)
        session.mids = {section.mid: section.name for section in sections}
        current = self.rooms.setdefault(room, Room(room))
        current.publishers[session_id] = session
        self._update_sources(current, session, sections)
        self._tracks_changed(current, session)
        if current.program is None:
            self._switch_program(current, session)
        self._register(session)
        logger.info("publisher joined", extra={"room": room, "session_id": session_id,
                                               "codecs": _codec_names(session.transceivers)})
        return SessionAnswer(session_id, self._announce(answer), _codec_names(session.transceivers))

    def _add_receivers(self, session: PublisherSession, sections: list[Section],
                       outputs: dict[str, TrackHub]) -> None:
        for section in sections:
            if section.active and section.name not in session.transceivers:
                transceiver = session.pc.addTransceiver(section.kind, direction="recvonly")
                # Once a room has an output, every source of it must match so viewers switch without renegotiating.
                output = outputs.get(section.name)
                transceiver.setCodecPreferences([_capability(section.kind, output)] if output
                                                else FORWARDABLE[section.kind])
                session.transceivers[section.name] = transceiver

    def _update_sources(self, room: Room, session: PublisherSession, sections: list[Section]) -> bool:
        """Start diverting newly negotiated tracks and follow tracks turned off or on; True if any changed."""
        changed = False
        for section in sections:
            transceiver = session.transceivers.get(section.name)
            source = session.sources.get(section.name)
            if transceiver is None or not transceiver._codecs:
                continue
            if source is None:
                if not section.active:
                    continue
                codec = transceiver._codecs[0]
                assert codec.payloadType is not None  # negotiated codecs always carry one
                if section.name not in room.outputs:
                    room.outputs[section.name] = TrackHub(section.kind, codec.mimeType, codec.clockRate,
                                                          lambda: None, dict(codec.parameters))
                source = Source(section.name, section.kind, transceiver.receiver, codec.payloadType,
                                _rtx_payload_type(transceiver), active=False)
                session.sources[section.name] = source
                self._divert(room, session, source)
            if source.active == section.active:
                continue
            source.active, changed = section.active, True
            if section.active:  # a track (back) on air: outputs it feeds rebase on its next keyframe
                feed = session.feeds.get(section.name)
                outputs = [feed] if feed is not None else []
                if room.program == session.id:
                    outputs.append(room.outputs[section.name])
                for output in outputs:
                    output.switch_source(source.request_keyframe, source.nack)
        return changed

    def _tracks_changed(self, room: Room, session: PublisherSession) -> None:
        self.emit(MediaEvent("tracks.changed", room.name, session.id, "publisher",
                             {"tracks": _active_tracks(session), "program": room.program == session.id}))

    def _divert(self, room: Room, session: PublisherSession, source: Source) -> None:
        output = room.outputs[source.name]
        feeds = session.feeds

        def on_packet(packet: RtpPacket) -> None:
            payload, sequence = packet.payload, packet.sequence_number
            if packet.payload_type != source.payload_type:
                if packet.payload_type != source.rtx_payload_type or len(payload) < 2:
                    return  # another stream: not forwarded as media
                sequence, payload = int.from_bytes(payload[:2], "big"), payload[2:]  # RFC 4588 unwrap
            else:
                source.media_ssrc = packet.ssrc
            session.packets += 1
            if not source.active:
                return  # a track renegotiated away that the sender has not stopped yet
            if room.program == session.id:
                output.forward(sequence, bool(packet.marker), packet.timestamp, payload)
            if feeds:
                feed = feeds.get(source.name)
                if feed is not None:
                    feed.forward(sequence, bool(packet.marker), packet.timestamp, payload)

        forwarding.divert_received_rtp(source.receiver, on_packet, lambda: source.bandwidth_cap)

    def _switch_program(self, room: Room, session: PublisherSession | None) -> None:
        room.program = session.id if session is not None else None
        if session is None:
            return
        for name, output in room.outputs.items():
            source = session.sources.get(name)
            if source is not None and source.active:
                output.switch_source(source.request_keyframe, source.nack)
        self.emit(MediaEvent("track.up", room.name, session.id, "publisher",
                             {"program": True, "tracks": _active_tracks(session)}))

    async def set_program_feed(self, room: str, session_id: str) -> None:
        current = self.rooms.get(room)
        publisher = current.publishers.get(session_id) if current is not None else None
        if current is None or publisher is None:
            raise MediaError("publisher_not_found", f"no publisher {session_id!r} in room {room!r}", 404)
        if current.program != session_id:
            self._switch_program(current, publisher)

    # --- viewers -------------------------------------------------------------------------------------------

    async def open_viewer(self, room: str, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        self._configure()
        sections = offered_sections(offer_sdp, "viewer", _track_names(tracks))
        current = self.rooms.get(room)
        if current is None or not current.outputs:
            raise MediaError("not_live", f"room {room!r} is not live", 404)
        session = ViewerSession(session_id, room, RTCPeerConnection())
        self._add_senders(current, session, sections)
        answer = await _negotiate(session.pc, offer_sdp, _viewer_codecs(current), fresh=True)
        session.mids = {section.mid: section.name for section in sections}
        session.wanted = {section.name for section in sections if section.active}

        @session.pc.on("connectionstatechange")
        async def on_state() -> None:
            if session.pc.connectionState == "connected" and not session.connected:
                session.connected = True
                self._attach_viewer(session)
                self.emit(MediaEvent("session.connected", room, session_id, "viewer"))

        current.viewers[session_id] = session
        self._register(session)
        return SessionAnswer(session_id, self._announce(answer), _codec_names(session.transceivers))

    def _add_senders(self, room: Room, session: ViewerSession, sections: list[Section]) -> None:
        for section in sections:
            if not section.active or section.name in session.transceivers:
                continue
            output = self._output(room, section.name)
            if output is None:
                if parse_feed(section.name) is not None:
                    raise MediaError("track_not_found", f"no publisher track {section.name!r} in this room", 404,
                                     "tracks")
                continue  # a program track the room does not have (yet): that section stays empty
            transceiver = session.pc.addTransceiver(forwarding.IdleTrack(section.kind), direction="sendonly")
            transceiver.setCodecPreferences([_capability(section.kind, output), *_rtx_capabilities(section.kind)])
            session.transceivers[section.name] = transceiver

    def _output(self, room: Room, name: str) -> TrackHub | None:
        """The hub a track name stands for: a program output, or one publisher's own feed (made on demand)."""
        feed = parse_feed(name)
        if feed is None:
            return room.outputs.get(name)
        publisher_id, track = feed
        publisher = room.publishers.get(publisher_id)
        source = publisher.sources.get(track) if publisher is not None else None
        if publisher is None or source is None:
            return None
        hub = publisher.feeds.get(track)
        if hub is None:
            program = room.outputs[track]  # every source of a track name has the program output's codec
            hub = publisher.feeds[track] = TrackHub(source.kind, program.mime_type, program.clock_rate, lambda: None,
                                                    dict(program.codec_parameters))
            hub.switch_source(source.request_keyframe, source.nack)
        return hub

    def _attach_viewer(self, session: ViewerSession) -> None:
        """Give each wanted track a leg in its hub, and take legs of unwanted tracks out of theirs."""
        room = self.rooms.get(session.room)
        if room is None or not session.connected or session.id not in room.viewers:
            return
        for name, (output, leg, _sender) in session.legs.items():
            if name not in session.wanted:
                output.remove_leg(leg)
            elif leg not in output.legs:
                leg.initial_sequence = (leg.initial_sequence + leg.packets + 1) & 0xFFFF
                output.add_leg(leg)
        for name in session.wanted - session.legs.keys():
            transceiver = session.transceivers.get(name)
            hub = self._output(room, name)
            if transceiver is None or hub is None or not transceiver._codecs:
                continue
            sender = transceiver.sender
            payload_type = transceiver._codecs[0].payloadType
            assert payload_type is not None  # negotiated codecs always carry one
            leg = ViewerLeg(payload_type=payload_type, ssrc=sender._ssrc, send=forwarding.packet_sender(sender),
                            initial_sequence=random.randrange(0x10000), rtx_payload_type=_rtx_payload_type(transceiver),
                            rtx_ssrc=sender._rtx_ssrc, rtx_sequence=random.randrange(0x10000),
                            abs_send_time_id=forwarding.abs_send_time_id(transceiver))
            forwarding.route_feedback(sender, hub.request_keyframe, functools.partial(_retransmit, hub, leg),
                                      functools.partial(_record_bandwidth, leg))
            hub.add_leg(leg)
            session.legs[name] = (hub, leg, sender)

    # --- both ----------------------------------------------------------------------------------------------

    async def renegotiate(self, session_id: str, offer_sdp: str, tracks: str = "") -> SessionAnswer:
        """A new offer on a session's connection: tracks added, removed or (viewers) chosen anew. A refused
        offer leaves the session as it was."""
        session = self._sessions.get(session_id)
        room = self.rooms.get(session.room) if session is not None else None
        if session is None or room is None:
            raise MediaError("session_not_found", f"no media session {session_id!r}", 404, "session_id")
        if isinstance(session, PublisherSession):
            sections = offered_sections(offer_sdp, "publisher", renegotiating=True)
            _check_mids(session, sections)
            self._add_receivers(session, sections, room.outputs)
            answer = await _negotiate(session.pc, offer_sdp, _PUBLISHER_CODECS, fresh=False)
            session.mids.update({section.mid: section.name for section in sections})
            if self._update_sources(room, session, sections):
                self._tracks_changed(room, session)
        else:
            sections = offered_sections(offer_sdp, "viewer", _track_names(tracks), renegotiating=True)
            _check_mids(session, sections)
            self._add_senders(room, session, sections)
            answer = await _negotiate(session.pc, offer_sdp, _viewer_codecs(room), fresh=False)
            session.mids.update({section.mid: section.name for section in sections})
            session.wanted = {section.name for section in sections if section.active}
            self._attach_viewer(session)
        return SessionAnswer(session_id, self._announce(answer), _codec_names(session.transceivers))

    def _register(self, session: Session) -> None:
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
                self._close_feeds(room, session)
                if room.program == session_id:
                    self._switch_program(room, next(iter(room.publishers.values()), None))
        else:
            kind = "viewer"
            for output, leg, _sender in session.legs.values():
                output.remove_leg(leg)
            if room is not None:
                room.viewers.pop(session_id, None)
        if room is not None and not room.publishers and not room.viewers:
            self._drop_room(room)
        await session.pc.close()
        self.emit(MediaEvent("session.closed", session.room, session_id, kind))  # type: ignore[arg-type]
        logger.info("session closed", extra={"room": session.room, "session_id": session_id, "kind": kind})
        return True

    @staticmethod
    def _close_feeds(room: Room, publisher: PublisherSession) -> None:
        """A publisher's own feeds end with it; viewers keep their connections (the page drops the track)."""
        closing = set(publisher.feeds.values())
        for viewer in room.viewers.values():
            for name, (output, _leg, _sender) in list(viewer.legs.items()):
                if output in closing:
                    del viewer.legs[name]
                    viewer.wanted.discard(name)
        for hub in closing:
            hub.close()
        publisher.feeds.clear()

    async def end_room(self, room: str) -> None:
        """The show is over: close every session of the room."""
        current = self.rooms.get(room)
        if current is None:
            return
        for session_id in [*current.viewers, *current.publishers]:
            await self.close_session(session_id)
        self._drop_room(current)

    async def open_tap(self, room: str, tap_id: str, host: str, port: str) -> list[str]:
        """Taps carry the program's camera and sound (what HLS and recordings show), not a screen share."""
        current = self.rooms.get(room)
        outputs = {name: hub for name, hub in current.outputs.items() if name in TAPPED} if current else None
        return self.taps.open(room, outputs, tap_id, host, port)

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
        """Off the packet path, once a second: close sessions that never connected; copy each leg's counters
        into its sender for aiortc's RTCP sender reports; fold viewers' bandwidth estimates into what each
        publisher is told, and close publishers that went silent (a packet counter that stopped moving, so
        the packet path pays one integer increment rather than a clock read)."""
        while True:
            await asyncio.sleep(SENDER_REPORT_SYNC_SECONDS)
            ntp = current_ntp_time()
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if (session.pc.connectionState in ("new", "connecting")
                        and now - session.opened_at > self.settings.connect_timeout_seconds):
                    logger.info("session never connected, closing", extra={"room": session.room,
                                                                          "session_id": session.id})
                    await self.close_session(session.id)
                elif isinstance(session, ViewerSession):
                    for _hub, leg, sender in session.legs.values():
                        forwarding.update_sender_report(sender, leg.packets, leg.octets, leg.last_timestamp, ntp)
                else:
                    await self._check_publisher(session, now)

    async def _check_publisher(self, session: PublisherSession, now: float) -> None:
        self._cap_bandwidth(session)
        if session.packets != session._seen_packets:
            session._seen_packets, session.quiet_since = session.packets, now
        elif (session.pc.connectionState == "connected"
              and now - session.quiet_since > self.settings.silence_timeout_seconds):
            logger.info("publisher silent, closing", extra={"room": session.room, "session_id": session.id})
            await self.close_session(session.id)

    def _cap_bandwidth(self, publisher: PublisherSession) -> None:
        room = self.rooms.get(publisher.room)
        if room is None:
            return
        floor = self.settings.bandwidth_floor_kbps * 1000
        for name, source in publisher.sources.items():
            hubs = [publisher.feeds.get(name), room.outputs.get(name) if room.program == publisher.id else None]
            estimates = [leg.remb_bps for hub in hubs if hub is not None for leg in hub.legs if leg.remb_bps]
            source.bandwidth_cap = viewer_bandwidth(estimates, floor)

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


_PUBLISHER_CODECS = ("no_forwardable_codec", "offer has no codec this room can forward (Opus; H.264 "
                     "packetization-mode 1 constrained baseline; VP8; the same as the room's earlier publishers)")


def _viewer_codecs(room: Room) -> tuple[str, str]:
    return ("viewer_codec_unsupported",
            f"the viewer cannot receive the room's codecs ({', '.join(h.mime_type for h in room.outputs.values())})")


async def _negotiate(pc: RTCPeerConnection, offer_sdp: str, refusal: tuple[str, str],
                     fresh: bool) -> RTCSessionDescription:
    """Answer an offer. A refused first offer closes its new connection; a refused renegotiation leaves the
    established one as it was (aiortc checks codecs before it changes any state)."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except (OperationError, InvalidAccessError, InvalidStateError, InternalError, ValueError) as exc:
        if fresh:
            await pc.close()
        if isinstance(exc, OperationError):
            raise MediaError(*refusal, 422) from None
        raise MediaError("bad_sdp", f"offer refused: {exc}", 400) from None
    description = pc.localDescription
    assert description is not None
    return description


def _check_mids(session: Session, sections: list[Section]) -> None:
    for section in sections:
        known = session.mids.get(section.mid)
        if known is not None and known != section.name:
            raise MediaError("bad_tracks", f"section {section.mid!r} carries {known!r}; a renegotiation cannot "
                             "change what a section carries (add a section instead)", 400, "tracks")


def _track_names(tracks: str) -> list[str] | None:
    """The wire form of a viewer's track list: names joined by commas, "" for the default."""
    return tracks.split(",") if tracks else None


def _active_tracks(session: PublisherSession) -> list[str]:
    return sorted(name for name, source in session.sources.items() if source.active)


def _record_bandwidth(leg: ViewerLeg, bitrate: int) -> None:
    leg.remb_bps = bitrate


def viewer_bandwidth(estimates: list[int], floor: int) -> int | None:
    """What to let the publisher send, from its viewers' estimates: see BANDWIDTH_PERCENTILE."""
    if not estimates:
        return None
    ranked = sorted(estimates)
    return max(floor, ranked[int(len(ranked) * BANDWIDTH_PERCENTILE)])


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
