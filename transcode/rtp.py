"""From tap datagrams to whole encoded frames: parse the tap header and RTP header, put video packets back
together into frames (H.264 as its NAL units, VP8 as one frame), and refuse anything after a loss until
the next keyframe, so the muxer and decoders only ever see decodable data.

This is the remuxed room's hot path (every packet of the program feed), so it stays lean: one struct
unpack per datagram, payloads as memoryviews into the datagram (copied once, into the fragment), and the
H.264 depayloader (RFC 6184: single NAL unit, STAP-A, FU-A) writes NAL units, which is what MP4 stores.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from aiortc.codecs.vpx import vp8_depayload

from media.codecs import is_keyframe_start
from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION

logger = logging.getLogger(__name__)

_TAP_RTP = struct.Struct(TAP_HEADER.format + "BBHII")
"""The tap header, then the RTP fixed header (RFC 3550 5.1)."""
KIND_NAMES = {value: name for name, value in KINDS.items()}
CODEC_NAMES = {value: name for name, value in CODECS.items()}
PENDING_FRAMES = 4
"""Incomplete frames waited for (late packets, retransmissions) before the oldest counts as lost."""
_STAP_A = 24
_FU_A = 28


class TapPacket(NamedTuple):
    kind: str
    codec: str
    """Lower-case MIME type, e.g. "video/h264"."""
    epoch: int
    arrival_ns: int
    sequence: int
    timestamp: int
    marker: bool
    payload: memoryview


def parse(datagram: bytes) -> TapPacket | None:
    """None for anything that is not a well-formed tap datagram of a known kind and codec."""
    if len(datagram) < _TAP_RTP.size:
        return None
    magic, version, kind, codec, _reserved, epoch, arrival_ns, first, second, sequence, timestamp, _ssrc = \
        _TAP_RTP.unpack_from(datagram)
    kind_name, codec_name = KIND_NAMES.get(kind), CODEC_NAMES.get(codec)
    if magic != TAP_MAGIC or version != TAP_VERSION or first >> 6 != 2 or kind_name is None or codec_name is None:
        return None
    offset, end = _TAP_RTP.size + 4 * (first & 0x0F), len(datagram)
    if first & 0x10 and offset + 4 <= end:  # a header extension: its length in 32-bit words
        offset += 4 + 4 * int.from_bytes(datagram[offset + 2:offset + 4], "big")
    if first & 0x20:  # padding: its length in the last byte
        end -= datagram[-1]
    if offset >= end:
        return None
    return TapPacket(kind_name, codec_name, epoch, arrival_ns, sequence, timestamp, bool(second & 0x80),
                     memoryview(datagram)[offset:end])


def h264_units(payloads: list[memoryview]) -> list[bytes | memoryview]:
    """The NAL units of one access unit from its RTP payloads, in order; ValueError for a payload this
    depayloader does not take (STAP-B, MTAP, FU-B: not in packetization-mode 1) or a broken FU-A."""
    units: list[bytes | memoryview] = []
    fragments: list[bytes | memoryview] = []
    for payload in payloads:
        kind = payload[0] & 0x1F
        if 0 < kind < _STAP_A:
            units.append(payload)
        elif kind == _FU_A and len(payload) > 2:
            header = payload[1]
            if header & 0x80:
                fragments = [bytes(((payload[0] & 0xE0) | (header & 0x1F),)), payload[2:]]
            elif fragments:
                fragments.append(payload[2:])
            else:
                raise ValueError("FU-A continuation without its start")
            if header & 0x40:
                units.append(b"".join(fragments))
                fragments = []
        elif kind == _STAP_A:
            offset, end = 1, len(payload)
            while offset + 2 <= end:
                size = payload[offset] << 8 | payload[offset + 1]
                offset += 2
                if not size or offset + size > end:
                    raise ValueError("STAP-A unit overruns its packet")
                units.append(payload[offset:offset + size])
                offset += size
        else:
            raise ValueError(f"NAL unit type {kind} is not depayloaded")
    if fragments:
        raise ValueError("FU-A without its end")
    return units


class Frame(NamedTuple):
    units: list[bytes | memoryview]
    """H.264: the access unit's NAL units (no start codes); VP8: the frame, as one unit."""
    timestamp: int
    arrival_ns: int
    """When its first packet arrived at the worker."""
    keyframe: bool


@dataclass
class _Pending:
    packets: dict[int, TapPacket] = field(default_factory=dict)
    marker: int | None = None


_NO_FRAMES: list[Frame] = []


@dataclass
class FrameAssembler:
    """Video frames from packets of one epoch. A frame is whole when every sequence number from the end of
    the previous whole frame to its marker packet is there."""

    codec: str
    _expected: int | None = None
    """Sequence number that starts the next frame; None: wait for a keyframe start."""
    _pending: dict[int, _Pending] = field(default_factory=dict)
    """By RTP timestamp, in the order their first packets came."""
    lost_frames: int = 0

    def add(self, packet: TapPacket) -> list[Frame]:
        pending = self._pending.get(packet.timestamp)
        if pending is None:
            pending = self._pending[packet.timestamp] = _Pending()
        pending.packets[packet.sequence] = packet
        if packet.marker:
            pending.marker = packet.sequence
        elif len(self._pending) <= PENDING_FRAMES:
            return _NO_FRAMES  # only a marker can complete a frame (a late middle packet waits for the next one)
        frames = []
        while self._pending:
            timestamp = next(iter(self._pending))
            frame = self._complete(timestamp, self._pending[timestamp])
            if frame is None:
                if len(self._pending) <= PENDING_FRAMES:
                    break
                del self._pending[timestamp]
                self.lost_frames += 1
                self._expected = None  # lost: the next frame to use is a keyframe
                continue
            del self._pending[timestamp]
            if frame.units:
                frames.append(frame)
        return frames

    def _complete(self, timestamp: int, pending: _Pending) -> Frame | None:
        marker = pending.marker
        if marker is None:
            return None
        packets = pending.packets
        if self._expected is None:
            start = marker
            while (start - 1) & 0xFFFF in packets:
                start = (start - 1) & 0xFFFF
            if not is_keyframe_start(self.codec, bytes(packets[start].payload)):
                return Frame([], timestamp, 0, False)  # not a frame to start on: drop it
        else:
            start = self._expected
        count = ((marker - start) & 0xFFFF) + 1
        if count > 2048 or len(packets) < count:
            return None
        run = [packets.get((start + n) & 0xFFFF) for n in range(count)]
        if None in run:
            return None
        self._expected = (marker + 1) & 0xFFFF
        payloads = [packet.payload for packet in run if packet is not None]
        try:
            if self.codec == "video/h264":
                units = h264_units(payloads)
            else:
                units = [b"".join(vp8_depayload(bytes(payload)) for payload in payloads)]
        except (ValueError, IndexError):
            self._expected = None
            return Frame([], timestamp, 0, False)
        return Frame(units, timestamp, run[0].arrival_ns if run[0] is not None else 0,
                     is_keyframe_start(self.codec, bytes(payloads[0])))
