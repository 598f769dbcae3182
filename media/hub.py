"""A room's output for one kind of track (audio or video), fanned out to every viewer leg: the fast path.

Sequence numbers: the hub numbers packets in the program source's own sequence space plus an offset, so a
gap upstream stays a gap downstream (viewers NACK it) and a late retransmission fills its own slot. When the
program source changes (a publisher reconnects, the host switches feeds) the offset and the RTP timestamp
offset are re-based so every viewer sees one continuous stream; video switches on the new source's keyframe.

Per viewer only the 12-byte RTP header is rebuilt (the leg's payload type, sequence number, SSRC); header
extensions are dropped, their ids being negotiated per leg. Work done once per packet: the keyframe check,
one history slot. A ring of recent packets answers viewers' NACKs (as RTX where the leg negotiated it).
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
_HEADER_WITH_SEND_TIME = struct.Struct("!BBHIIHHI")
"""The 12-byte header plus an RFC 8285 one-byte extension block holding abs-send-time (3 bytes)."""
_RTP_VERSION_2 = 0x80
_EXTENSION_BIT = 0x10
_ONE_BYTE_PROFILE = 0xBEDE
_MASK32 = 0xFFFFFFFF

# Viewers' keyframe requests (joins, PLI, FIR) reach the publisher at most this often; requests that arrive
# in between are folded into one sent when the interval ends, unless a keyframe already came. A request
# made while an earlier one is still unanswered (for up to KEYFRAME_ANSWER_WAIT) rides on that one.
KEYFRAME_MIN_INTERVAL = 0.15
KEYFRAME_ANSWER_WAIT = 1.0
HISTORY = 1024
"""Packets kept for retransmission: ~3 s of 720p video, far more of audio."""
MAX_NACKED_GAP = 200
"""A bigger jump in the source's sequence numbers is a restart, not loss: nothing is NACKed for it."""


@dataclass(eq=False)
class ViewerLeg:
    """One viewer's copy of one track: its own payload types, sequence numbers and SSRCs."""

    payload_type: int
    ssrc: int
    send: Callable[[bytes], None]
    """Protect and send one RTP packet on the viewer's transport (must not block)."""
    initial_sequence: int = 0
    rtx_payload_type: int | None = None
    rtx_ssrc: int = 0
    waiting_for_keyframe: bool = True
    offset: int = 0
    """leg sequence number = (hub index + offset) mod 2**16, fixed when the leg starts."""
    first_index: int = 0
    rtx_sequence: int = 0
    packets: int = 0
    octets: int = 0
    last_timestamp: int = 0
    retransmitted: int = 0
    abs_send_time_id: int = 0
    """The leg's header-extension id for abs-send-time (0: not negotiated). With it, browsers estimate the
    leg's bandwidth and report it as REMB."""
    remb_bps: int = 0
    """The viewer's latest REMB estimate for this leg (0: none yet)."""


@dataclass(eq=False)
class TrackHub:
    kind: str
    mime_type: str
    clock_rate: int
    request_keyframe_upstream: Callable[[], None] = field(repr=False)
    codec_parameters: dict[str, str | int | None] = field(default_factory=dict)
    """The fmtp parameters every source and viewer of this output must use."""
    nack_upstream: Callable[[list[int]], None] = field(default=lambda lost: None, repr=False)
    legs: list[ViewerLeg] = field(default_factory=list)
    packets_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    keyframe_requests_upstream: int = 0
    nacks_upstream: int = 0
    switches: int = 0
    _history: list[tuple[int, int, bytes] | None] = field(default_factory=lambda: [None] * HISTORY, repr=False)
    _index: int = field(default=-1, repr=False)
    """Highest hub index forwarded so far (-1: none)."""
    _source_seq: int = field(default=0, repr=False)
    _source_index: int = field(default=0, repr=False)
    """The hub index that `_source_seq` maps to."""
    _ts_offset: int = field(default=0, repr=False)
    _last_out_ts: int | None = field(default=None, repr=False)
    _last_forward_time: float = field(default=0.0, repr=False)
    _rebase: bool = field(default=True, repr=False)
    _last_request: float = field(default=0.0, repr=False)
    _awaiting_keyframe: bool = field(default=False, repr=False)
    _pending_request: asyncio.TimerHandle | None = field(default=None, repr=False)
    _cadence: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    # --- sources -------------------------------------------------------------------------------------------

    def switch_source(self, request_keyframe_upstream: Callable[[], None],
                      nack_upstream: Callable[[list[int]], None]) -> None:
        """Take packets from a new program source from now on, continuing the output seamlessly."""
        self.request_keyframe_upstream = request_keyframe_upstream
        self.nack_upstream = nack_upstream
        self._rebase = True
        self.switches += 1
        self._awaiting_keyframe = False
        if self.is_video:
            self.request_keyframe()

    def forward(self, sequence: int, marker: bool, timestamp: int, payload: bytes) -> None:
        """Hand one packet of the program source to every leg."""
        self.packets_in += 1
        keyframe = self.is_video and is_keyframe_start(self.mime_type, payload)
        if keyframe:
            self._keyframe_arrived()
        now = time.monotonic()
        if self._rebase:
            if self.is_video and not keyframe:
                return  # a new source joins the output on its first keyframe
            self._start_source(sequence, timestamp, now)
        delta = (sequence - self._source_seq + 0x8000) % 0x10000 - 0x8000
        index = self._source_index + delta
        if delta > 0:
            if 1 < delta <= MAX_NACKED_GAP:
                self._nack_gap(sequence, delta)
            elif delta > MAX_NACKED_GAP:  # the source restarted its numbering: continue right after
                index = self._index + 1
            self._source_seq, self._source_index = sequence, index
        elif index <= self._index - HISTORY or (self._history[index % HISTORY] is not None and index <= self._index):
            return  # too old to place, or a duplicate
        out_ts = (timestamp + self._ts_offset) & _MASK32
        marker_bit = 0x80 if marker else 0
        self._history[index % HISTORY] = (marker_bit, out_ts, payload)
        if index > self._index:
            self._index = index
            self._last_out_ts = out_ts
            self._last_forward_time = now
        self._send_to_legs(index, marker_bit, out_ts, payload, keyframe, now)

    def _start_source(self, sequence: int, timestamp: int, now: float) -> None:
        if self._last_out_ts is not None:
            # Continue the clock: the new source's first packet lands where wall time says it should.
            elapsed = max(1, int((now - self._last_forward_time) * self.clock_rate))
            self._ts_offset = (self._last_out_ts + elapsed - timestamp) & _MASK32
        self._source_seq, self._source_index = (sequence - 1) & 0xFFFF, self._index
        self._rebase = False

    def _send_to_legs(self, index: int, marker_bit: int, out_ts: int, payload: bytes, keyframe: bool,
                      now: float) -> None:
        sent = 0
        send_time = int(now * 262144) & 0xFFFFFF  # abs-send-time: seconds in 6.18 fixed point, 24 bits
        for leg in self.legs:
            if leg.waiting_for_keyframe:
                if (self.is_video and not keyframe) or index < self._index:  # audio legs start anywhere
                    continue
                leg.waiting_for_keyframe = False
                leg.offset = (leg.initial_sequence - index) & 0xFFFF
                leg.first_index = index
            elif index < leg.first_index:
                continue
            if leg.abs_send_time_id:
                packet = _HEADER_WITH_SEND_TIME.pack(
                    _RTP_VERSION_2 | _EXTENSION_BIT, marker_bit | leg.payload_type, (index + leg.offset) & 0xFFFF,
                    out_ts, leg.ssrc, _ONE_BYTE_PROFILE, 1, leg.abs_send_time_id << 28 | 2 << 24 | send_time) + payload
            else:
                packet = _HEADER.pack(_RTP_VERSION_2, marker_bit | leg.payload_type, (index + leg.offset) & 0xFFFF,
                                      out_ts, leg.ssrc) + payload
            try:
                leg.send(packet)
            except ConnectionError:
                continue  # the leg is closing; its session removes it
            leg.packets += 1
            leg.octets += len(payload)
            leg.last_timestamp = out_ts
            sent += 1
        self.packets_out += sent
        self.bytes_out += sent * (len(payload) + _HEADER.size)

    def _nack_gap(self, sequence: int, delta: int) -> None:
        lost = [(sequence - missing) & 0xFFFF for missing in range(delta - 1, 0, -1)]
        self.nacks_upstream += 1
        self.nack_upstream(lost)

    # --- viewers -------------------------------------------------------------------------------------------

    def add_leg(self, leg: ViewerLeg) -> None:
        leg.waiting_for_keyframe = True
        if not self.is_video and self._index >= 0:
            leg.waiting_for_keyframe = False  # audio needs no keyframe: start with the next packet
            leg.offset = (leg.initial_sequence - self._index - 1) & 0xFFFF
            leg.first_index = self._index + 1
        self.legs.append(leg)
        if self.is_video:
            self.request_keyframe()

    def remove_leg(self, leg: ViewerLeg) -> None:
        if leg in self.legs:
            self.legs.remove(leg)

    def retransmit(self, leg: ViewerLeg, sequences: list[int]) -> int:
        """Answer a viewer's NACK from the history; returns how many packets went out again."""
        if leg.waiting_for_keyframe:
            return 0
        sent = 0
        for sequence in sequences:
            # The newest hub index at or below the current one whose leg sequence is `sequence`.
            index = self._index - ((self._index + leg.offset - sequence) & 0xFFFF)
            if index < leg.first_index or index <= self._index - HISTORY:
                continue
            entry = self._history[index % HISTORY]
            if entry is None:
                continue
            marker_bit, out_ts, payload = entry
            if leg.rtx_payload_type is not None:  # RFC 4588: original sequence number, then the payload
                packet = _HEADER.pack(_RTP_VERSION_2, marker_bit | leg.rtx_payload_type, leg.rtx_sequence, out_ts,
                                      leg.rtx_ssrc) + sequence.to_bytes(2, "big") + payload
                leg.rtx_sequence = (leg.rtx_sequence + 1) & 0xFFFF
            else:
                packet = _HEADER.pack(_RTP_VERSION_2, marker_bit | leg.payload_type, sequence, out_ts,
                                      leg.ssrc) + payload
            try:
                leg.send(packet)
            except ConnectionError:
                return sent
            sent += 1
        leg.retransmitted += sent
        return sent

    # --- keyframes -----------------------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the program source for a keyframe, coalescing requests that arrive close together."""
        now = time.monotonic()
        if self._awaiting_keyframe and now - self._last_request < KEYFRAME_ANSWER_WAIT:
            return  # the keyframe already asked for will serve this request too
        wait = self._last_request + KEYFRAME_MIN_INTERVAL - now
        if wait <= 0:
            self._send_request(now)
        elif self._pending_request is None:
            self._pending_request = asyncio.get_running_loop().call_later(wait, self._send_pending)

    def _keyframe_arrived(self) -> None:
        self._awaiting_keyframe = False
        if self._pending_request is not None:
            self._pending_request.cancel()
            self._pending_request = None

    def _send_pending(self) -> None:
        self._pending_request = None
        self._send_request(time.monotonic())

    def _send_request(self, now: float) -> None:
        self._last_request = now
        self._awaiting_keyframe = True
        self.keyframe_requests_upstream += 1
        self.request_keyframe_upstream()

    def set_keyframe_cadence(self, seconds: float) -> None:
        """Ask for a keyframe every `seconds` (0: never) — for consumers that cut on keyframes, such as the
        HLS packager. Off by default: every forced keyframe costs every viewer bitrate."""
        if self._cadence is not None:
            self._cadence.cancel()
            self._cadence = None
        if seconds > 0 and self.is_video:
            loop = asyncio.get_running_loop()

            def tick() -> None:
                self.request_keyframe()
                self._cadence = loop.call_later(seconds, tick)

            self._cadence = loop.call_later(seconds, tick)

    def close(self) -> None:
        for timer in (self._pending_request, self._cadence):
            if timer is not None:
                timer.cancel()
        self._pending_request = self._cadence = None
        self.legs.clear()
