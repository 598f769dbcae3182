"""Taps: a room's output RTP copied, as plain UDP datagrams on loopback, to a consumer outside the worker
(the HLS packager and recorder in `transcode/`). A tap is one more leg on each of the room's TrackHubs, so
it costs the fast path what one viewer costs minus SRTP, and it never blocks: a datagram the socket cannot
take now is dropped (the consumer waits for the next keyframe).

Each datagram is a `TAP_HEADER` then the RTP packet (12-byte header, the hub's continuous seq/ts). The
*epoch* changes whenever the room's program source changes (publisher reconnect, program-feed switch, a
new room for the same name): the consumer cuts a discontinuity there. `arrival_ns` is the server's
wall clock when the worker forwarded the packet; the consumer maps RTP time to it once per epoch.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from media.api import MediaError
from media.hub import TrackHub, ViewerLeg

logger = logging.getLogger(__name__)

TAP_MAGIC = 0x5054
TAP_VERSION = 1
TAP_HEADER = struct.Struct("!HBBBxHQQ")
"""magic, version, kind, codec, (pad), (reserved), epoch, arrival_ns — 24 bytes, network order."""
KINDS = {"audio": 0, "video": 1}
CODECS = {"audio/opus": 1, "video/h264": 2, "video/vp8": 3}
"""Codec ids on the wire, by lower-case MIME type."""
TAP_SSRC = {"audio": 0x7A900001, "video": 0x7A900002}
TAP_PAYLOAD_TYPE = {"audio": 111, "video": 96}
MAX_TAPS_PER_ROOM = 4
_EPOCH_STRIDE = 1 << 32
_epochs = itertools.count(1)
"""Worker-wide: a tap opened again (or on a new room of the same name) never reuses an epoch."""


@dataclass(eq=False)
class Tap:
    id: str
    room: str
    address: tuple[str, int]
    sock: socket.socket
    hubs: dict[str, TrackHub]
    base_epoch: int
    legs: list[tuple[TrackHub, ViewerLeg]] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0

    def epoch(self) -> int:
        """Both hubs switch together (one loop turn), so the sum of their switches names the program source."""
        return self.base_epoch + sum(hub.switches for hub in self.hubs.values())

    def sender(self, kind: str, hub: TrackHub) -> Callable[[bytes], None]:
        prefix = struct.pack("!HBBB", TAP_MAGIC, TAP_VERSION, KINDS[kind], CODECS.get(hub.mime_type.lower(), 0))
        sock, address, epoch, rest = self.sock, self.address, self.epoch, struct.Struct("!xHQQ")

        def send(packet: bytes) -> None:
            try:
                sock.sendto(prefix + rest.pack(0, epoch(), time.time_ns()) + packet, address)
                self.sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                self.dropped += 1  # full buffer, or nobody listening yet: never wait

        return send

    def close(self) -> None:
        for hub, leg in self.legs:
            hub.remove_leg(leg)
        self.legs.clear()
        self.sock.close()


class Taps:
    """The taps of one worker, by id."""

    def __init__(self) -> None:
        self._taps: dict[str, Tap] = {}

    def open(self, room: str, outputs: dict[str, TrackHub] | None, tap_id: str, host: str, port: str) -> list[str]:
        """Start copying `room`'s outputs to host:port (replacing an earlier tap of the same id unless it
        already does just that); returns the codecs. MediaError 404 "not_live" when the room has no outputs."""
        address = _loopback(host, port)
        if not outputs:
            raise MediaError("not_live", f"room {room!r} is not live", 404)
        existing = self._taps.get(tap_id)
        if existing is not None and existing.address == address and existing.hubs == outputs:
            return [hub.mime_type for hub in outputs.values()]  # already there: the stream stays unbroken
        self.close(tap_id)
        if sum(1 for tap in self._taps.values() if tap.room == room) >= MAX_TAPS_PER_ROOM:
            raise MediaError("too_many_taps", f"room {room!r} already has {MAX_TAPS_PER_ROOM} taps", 409)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        tap = Tap(tap_id, room, address, sock, dict(outputs), next(_epochs) * _EPOCH_STRIDE)
        for kind, hub in outputs.items():
            leg = ViewerLeg(payload_type=TAP_PAYLOAD_TYPE[kind], ssrc=TAP_SSRC[kind], send=tap.sender(kind, hub))
            hub.add_leg(leg)  # video legs start on a keyframe, which add_leg asks for
            tap.legs.append((hub, leg))
        self._taps[tap_id] = tap
        logger.info("tap opened", extra={"room": room, "tap_id": tap_id, "port": address[1]})
        return [hub.mime_type for hub in outputs.values()]

    def close(self, tap_id: str) -> bool:
        tap = self._taps.pop(tap_id, None)
        if tap is None:
            return False
        tap.close()
        logger.info("tap closed", extra={"room": tap.room, "tap_id": tap_id, "sent": tap.sent,
                                         "dropped": tap.dropped})
        return True

    def room_ended(self, room: str) -> None:
        """The room's hubs are gone: so are its taps."""
        for tap_id in [tap.id for tap in self._taps.values() if tap.room == room]:
            self.close(tap_id)

    def close_all(self) -> None:
        for tap_id in list(self._taps):
            self.close(tap_id)


def _loopback(host: str, port: str) -> tuple[str, int]:
    """Taps go to this machine only: the packets are unencrypted."""
    if host not in ("127.0.0.1", "localhost"):
        raise MediaError("bad_request", "a tap must point at a loopback address", 400, "host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise MediaError("bad_request", "port must be 1-65535", 400, "port")
    return ("127.0.0.1", int(port))
