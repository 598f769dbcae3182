"""One published track fanned out to every viewer leg: the per-packet fast path of the SFU.

Work that can be done once per packet (reading the header, spotting a keyframe) happens once in `forward`.
Per viewer only the 12-byte RTP header is rebuilt (that leg's payload type, sequence number and SSRC), then
the leg protects and sends it. Header extensions are dropped: their ids are negotiated per leg and nothing
downstream needs them. RTP timestamps pass through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from media.codecs import is_keyframe_start

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_RTP_VERSION_2 = 0x80

# Viewers' keyframe requests (joins, PLI, FIR) reach the publisher at most this often; requests that arrive
# in between are folded into one sent when the interval ends, unless a keyframe already came. A request
# made while an earlier one is still unanswered (for up to KEYFRAME_ANSWER_WAIT) rides on that one.
KEYFRAME_MIN_INTERVAL = 0.15
KEYFRAME_ANSWER_WAIT = 1.0


@dataclass(eq=False)
class ViewerLeg:
    """One viewer's copy of one track: its own payload type, sequence numbers and SSRC."""

    payload_type: int
    ssrc: int
    send: Callable[[bytes], None]
    """Protect and send one RTP packet on the viewer's transport (must not block)."""
    sequence: int = 0
    waiting_for_keyframe: bool = True
    packets: int = 0
    octets: int = 0
    last_timestamp: int = 0


@dataclass(eq=False)
class TrackHub:
    kind: str
    mime_type: str
    clock_rate: int
    request_keyframe_upstream: Callable[[], None] = field(repr=False)
    codec_parameters: dict[str, str | int | None] = field(default_factory=dict)
    """The fmtp parameters negotiated with the publisher; viewers must take exactly these."""
    legs: list[ViewerLeg] = field(default_factory=list)
    packets_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    keyframe_requests_upstream: int = 0
    _last_request: float = field(default=0.0, repr=False)
    _awaiting_keyframe: bool = field(default=False, repr=False)
    _pending_request: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    def add_leg(self, leg: ViewerLeg) -> None:
        leg.waiting_for_keyframe = self.is_video
        self.legs.append(leg)
        if self.is_video:
            self.request_keyframe()

    def remove_leg(self, leg: ViewerLeg) -> None:
        if leg in self.legs:
            self.legs.remove(leg)

    def forward(self, marker: bool, timestamp: int, payload: bytes) -> None:
        """Hand one publisher packet to every leg."""
        self.packets_in += 1
        keyframe = self.is_video and is_keyframe_start(self.mime_type, payload)
        if keyframe:
            self._awaiting_keyframe = False
            if self._pending_request is not None:
                self._pending_request.cancel()
                self._pending_request = None
        marker_bit = 0x80 if marker else 0
        sent = 0
        for leg in self.legs:
            if leg.waiting_for_keyframe:
                if not keyframe:
                    continue
                leg.waiting_for_keyframe = False
            packet = _HEADER.pack(_RTP_VERSION_2, marker_bit | leg.payload_type, leg.sequence, timestamp,
                                  leg.ssrc) + payload
            leg.sequence = (leg.sequence + 1) & 0xFFFF
            try:
                leg.send(packet)
            except ConnectionError:
                continue  # the leg is closing; its session removes it
            leg.packets += 1
            leg.octets += len(payload)
            leg.last_timestamp = timestamp
            sent += 1
        self.packets_out += sent
        self.bytes_out += sent * (len(payload) + _HEADER.size)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, coalescing requests that arrive close together."""
        now = time.monotonic()
        if self._awaiting_keyframe and now - self._last_request < KEYFRAME_ANSWER_WAIT:
            return  # the keyframe already asked for will serve this request too
        wait = self._last_request + KEYFRAME_MIN_INTERVAL - now
        if wait <= 0:
            self._send_request(now)
        elif self._pending_request is None:
            self._pending_request = asyncio.get_running_loop().call_later(wait, self._send_pending)

    def _send_pending(self) -> None:
        self._pending_request = None
        self._send_request(time.monotonic())

    def _send_request(self, now: float) -> None:
        self._last_request = now
        self._awaiting_keyframe = True
        self.keyframe_requests_upstream += 1
        self.request_keyframe_upstream()

    def close(self) -> None:
        if self._pending_request is not None:
            self._pending_request.cancel()
            self._pending_request = None
        self.legs.clear()
