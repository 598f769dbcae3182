"""From tap datagrams to whole encoded frames: parse the tap header and RTP header, put video packets back
together into frames (H.264 access units in Annex B, VP8 frames), and refuse anything after a loss until
the next keyframe, so the muxer and decoders only ever see decodable data."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from media.codecs import is_keyframe_start
from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION

logger = logging.getLogger(__name__)

_RTP = struct.Struct("!BBHII")
KIND_NAMES = {value: name for name, value in KINDS.items()}
CODEC_NAMES = {value: name for name, value in CODECS.items()}
PENDING_FRAMES = 4
"""Incomplete frames waited for (late packets, retransmissions) before the oldest counts as lost."""


@dataclass(frozen=True)
class TapPacket:
    kind: str
    codec: str
    """Lower-case MIME type, e.g. "video/h264"."""
    epoch: int
    arrival_ns: int
    sequence: int
    timestamp: int
    marker: bool
    payload: bytes


def parse(datagram: bytes) -> TapPacket | None:
    """None for anything that is not a well-formed tap datagram of a known kind and codec."""
    if len(datagram) < TAP_HEADER.size + _RTP.size:
        return None
    magic, version, kind, codec, _reserved, epoch, arrival_ns = TAP_HEADER.unpack_from(datagram)
    if magic != TAP_MAGIC or version != TAP_VERSION or kind not in KIND_NAMES or codec not in CODEC_NAMES:
        return None
    first, second, sequence, timestamp, _ssrc = _RTP.unpack_from(datagram, TAP_HEADER.size)
    if first >> 6 != 2:
        return None
    offset = TAP_HEADER.size + _RTP.size + 4 * (first & 0x0F)
    return TapPacket(KIND_NAMES[kind], CODEC_NAMES[codec], epoch, arrival_ns, sequence, timestamp,
                     bool(second & 0x80), datagram[offset:])


@dataclass(frozen=True)
class Frame:
    data: bytes
    timestamp: int
    arrival_ns: int
    """When its first packet arrived at the worker."""
    keyframe: bool


@dataclass
class _Pending:
    timestamp: int
    packets: dict[int, TapPacket] = field(default_factory=dict)
    marker: int | None = None


@dataclass
class FrameAssembler:
    """Video frames from packets of one epoch. A frame is whole when every sequence number from the end of
    the previous whole frame to its marker packet is there."""

    codec: str
    _expected: int | None = None
    """Sequence number that starts the next frame; None: wait for a keyframe start."""
    _pending: list[_Pending] = field(default_factory=list)
    lost_frames: int = 0

    def add(self, packet: TapPacket) -> list[Frame]:
        pending = next((p for p in self._pending if p.timestamp == packet.timestamp), None)
        if pending is None:
            pending = _Pending(packet.timestamp)
            self._pending.append(pending)
        pending.packets[packet.sequence] = packet
        if packet.marker:
            pending.marker = packet.sequence
        frames = []
        while self._pending:
            frame = self._complete(self._pending[0])
            if frame is None:
                if len(self._pending) <= PENDING_FRAMES:
                    break
                self._pending.pop(0)
                self.lost_frames += 1
                self._expected = None  # lost: the next frame to use is a keyframe
                continue
            self._pending.pop(0)
            if frame.data:
                frames.append(frame)
        return frames

    def _complete(self, pending: _Pending) -> Frame | None:
        if pending.marker is None:
            return None
        if self._expected is None:
            start = self._run_start(pending)
            if not is_keyframe_start(self.codec, pending.packets[start].payload):
                return Frame(b"", pending.timestamp, 0, False)  # not a frame to start on: drop it
        else:
            start = self._expected
        count = (pending.marker - start) & 0xFFFF
        if count > 2048:
            return None
        sequences = [(start + n) & 0xFFFF for n in range(count + 1)]
        if any(sequence not in pending.packets for sequence in sequences):
            return None
        packets = [pending.packets[sequence] for sequence in sequences]
        self._expected = (pending.marker + 1) & 0xFFFF
        depayload = h264_depayload if self.codec == "video/h264" else vp8_depayload
        try:
            data = b"".join(depayload(packet.payload) for packet in packets)
        except ValueError:
            self._expected = None
            return Frame(b"", pending.timestamp, 0, False)
        return Frame(data, pending.timestamp, packets[0].arrival_ns, is_keyframe_start(self.codec, packets[0].payload))

    @staticmethod
    def _run_start(pending: _Pending) -> int:
        """The lowest sequence number of the unbroken run of packets that ends at the marker."""
        assert pending.marker is not None
        sequence = pending.marker
        while (sequence - 1) & 0xFFFF in pending.packets:
            sequence = (sequence - 1) & 0xFFFF
        return sequence
