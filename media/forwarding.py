"""Everything that reaches into aiortc and aioice internals lives here, pinned to one aiortc version.

aiortc decodes every received track and encodes for every sender; an SFU must do neither. This module:
- diverts a publisher receiver's parsed RTP packets to a callback before depacketising and decoding;
- sends already-built RTP on a viewer's transport: SRTP protect, then straight to the nominated ICE pair's
  datagram transport, without the per-packet coroutine layers of `_send_rtp`;
- routes a viewer's RTCP keyframe requests (PLI/FIR), which aiortc drops when it is not encoding;
- adds what aiortc's configuration lacks: host addresses to offer, a UDP port range, a 1:1 NAT address;
- keeps each viewer sender's RTCP sender reports true to what was forwarded.

`check_aiortc()` fails loudly when the installed aiortc is not the one these facts were read from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

logger = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"

# (owner, attribute) pairs this module relies on; each is checked at start.
_REQUIRED = (
    (RTCRtpReceiver, "_handle_rtp_packet"),
    (RTCRtpReceiver, "_send_rtcp_pli"),
    (RTCRtpReceiver, "_send_rtcp_nack"),
    (RTCRtpReceiver, "_send_rtcp"),
    *((RTCRtpReceiver, name) for name in (
        "_RTCRtpReceiver__remote_bitrate_estimator", "_RTCRtpReceiver__rtcp_ssrc", "_RTCRtpReceiver__codecs",
        "_RTCRtpReceiver__remote_streams")),
    (RTCRtpSender, "_rtx_ssrc"),
    (RTCRtpTransceiver, "_headerExtensions"),
    (RTCRtpSender, "_handle_rtcp_packet"),
    (RTCRtpSender, "_ssrc"),
    (RTCDtlsTransport, "_tx_srtp"),
    (aioice.ice, "get_host_addresses"),
    (aioice.ice.Connection, "_nominated"),
    *((RTCRtpSender, name) for name in (
        "_RTCRtpSender__packet_count", "_RTCRtpSender__octet_count",
        "_RTCRtpSender__rtp_timestamp", "_RTCRtpSender__ntp_timestamp")),
)
# RTCRtpSender keeps its sender-report counters in name-mangled attributes.
_SENDER_COUNTERS = ("_RTCRtpSender__packet_count", "_RTCRtpSender__octet_count",
                    "_RTCRtpSender__rtp_timestamp", "_RTCRtpSender__ntp_timestamp")


class AiortcMismatch(RuntimeError):
    """The installed aiortc is not the version whose internals this module was written against."""


def check_aiortc() -> None:
    if aiortc.__version__ != AIORTC_VERSION:
        raise AiortcMismatch(f"media/forwarding.py is written for aiortc {AIORTC_VERSION}, "
                             f"found {aiortc.__version__}: re-check its internals before upgrading")
    for owner, name in _REQUIRED:
        present = hasattr(owner, name) or name in getattr(owner, "__annotations__", {}) or _set_in_init(owner, name)
        if not present:
            raise AiortcMismatch(f"aiortc internals moved: {getattr(owner, '__name__', owner)}.{name} is gone")


def _set_in_init(owner: Any, name: str) -> bool:
    init = getattr(owner, "__init__", None)
    code = getattr(init, "__code__", None)
    return code is not None and name in code.co_names


# --- ICE configuration -------------------------------------------------------------------------------------

def configure_ice(host_addresses: list[str], port_min: int = 0, port_max: int = 0) -> None:
    """Offer only `host_addresses` (empty: aioice's default, every interface but loopback) and bind media
    sockets within [port_min, port_max] (0, 0: any port). Applies to this process."""
    if host_addresses:
        addresses = list(host_addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
    if port_min and port_max:
        _bind_in_port_range(port_min, port_max)


def _bind_in_port_range(port_min: int, port_max: int) -> None:
    """aioice binds host candidates to port 0; wrap the loop's datagram factory to pick from the range."""
    loop = asyncio.get_running_loop()
    original = loop.create_datagram_endpoint
    next_port = [port_min]

    async def create_datagram_endpoint(factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await original(factory, local_addr=local_addr, **kwargs)
        span = port_max - port_min + 1
        for _ in range(span):
            port = next_port[0]
            next_port[0] = port_min + (port - port_min + 1) % span
            try:
                return await original(factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError:
                continue
        raise OSError(f"no free UDP port in media.ice {port_min}-{port_max}")

    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign,assignment]


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host.*)$", re.IGNORECASE | re.MULTILINE)


def announce_public_address(sdp: str, public_address: str) -> str:
    """For a 1:1 NAT: advertise `public_address` in place of the local host address (same port)."""
    if not public_address:
        return sdp
    return _CANDIDATE.sub(lambda match: f"{match.group(1)}{public_address}{match.group(3)}", sdp)


# --- Publisher side ----------------------------------------------------------------------------------------

PacketCallback = Callable[[RtpPacket], None]


def divert_received_rtp(receiver: RTCRtpReceiver, callback: PacketCallback,
                        bandwidth_cap: Callable[[], int | None] = lambda: None) -> None:
    """Send this receiver's parsed RTP packets to `callback` instead of its jitter buffer and decoder.

    The cheap first half of aiortc's handler is kept: its receive statistics (so its RTCP loop sends the
    publisher receiver reports) and its bitrate estimator (so the publisher gets REMB and can raise its
    bitrate), its REMB capped by `bandwidth_cap()` — what the viewers downstream can take. The rest — NACK
    generation, jitter buffer, decoding — is what a forwarder must not do."""

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None)
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(abs_send_time=packet.extensions.abs_send_time, arrival_time_ms=arrival_time_ms,
                                 payload_size=len(packet.payload) + packet.padding_size, ssrc=packet.ssrc)
            rtcp_ssrc = getattr(receiver, "_RTCRtpReceiver__rtcp_ssrc", None)
            if remb is not None and rtcp_ssrc is not None:
                bitrate, ssrcs = remb
                cap = bandwidth_cap()
                fci = pack_remb_fci(min(bitrate, cap) if cap is not None else bitrate, ssrcs)
                await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci))
        codec = _receiver_codecs(receiver).get(packet.payload_type)
        if codec is not None:
            streams = _receiver_streams(receiver)
            stream = streams.get(packet.ssrc)
            if stream is None:
                stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
            stream.add(packet)
        callback(packet)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


def _receiver_codecs(receiver: RTCRtpReceiver) -> dict[int, Any]:
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    return codecs


def _receiver_streams(receiver: RTCRtpReceiver) -> dict[int, StreamStatistics]:
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    return streams


def send_picture_loss(receiver: RTCRtpReceiver, media_ssrc: int) -> Awaitable[None]:
    """Ask the publisher for a keyframe (RTCP PLI) on the stream `media_ssrc`."""
    return receiver._send_rtcp_pli(media_ssrc)


# --- Viewer side -------------------------------------------------------------------------------------------

class IdleTrack(MediaStreamTrack):
    """Attached to a viewer's sender so aiortc negotiates it; never yields a frame, so aiortc's encode
    loop waits forever at no cost while forwarded packets go out through `packet_sender`."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise ConnectionError("idle track stopped")

    def stop(self) -> None:
        super().stop()
        if not self._never.done():
            self._never.cancel()


def packet_sender(sender: RTCRtpSender) -> Callable[[bytes], None]:
    """A synchronous send for built RTP packets on `sender`'s transport (valid once DTLS is connected)."""
    dtls = sender.transport
    connection = dtls.transport._connection

    def send(packet: bytes) -> None:
        pair = connection._nominated.get(1)
        srtp = dtls._tx_srtp
        if pair is None or srtp is None or pair.protocol.transport is None:
            raise ConnectionError("viewer transport is not connected")
        pair.protocol.transport.sendto(srtp.protect(packet), pair.remote_addr)

    return send


def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]) -> Awaitable[None]:
    """Ask the publisher to resend `lost` sequence numbers (RTCP generic NACK)."""
    return receiver._send_rtcp_nack(media_ssrc, lost)


def route_feedback(sender: RTCRtpSender, on_keyframe_request: Callable[[], None],
                   on_nack: Callable[[list[int]], object], on_bandwidth: Callable[[int], None]) -> None:
    """Turn a viewer's PLI/FIR on `sender` into `on_keyframe_request()`, its NACKs into `on_nack(lost)` (aiortc
    would answer them from its own history, empty when it is not encoding) and its REMB into
    `on_bandwidth(bits_per_second)`; receiver reports keep aiortc's handling (the sender's statistics)."""
    original = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError, struct.error):
                on_bandwidth(unpack_remb_fci(packet.fci)[0])
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            on_nack(packet.lost)
        else:
            await original(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def update_sender_report(sender: RTCRtpSender, packets: int, octets: int, rtp_timestamp: int,
                         ntp_timestamp: int) -> None:
    """Make the sender's periodic RTCP SR describe what was forwarded (called off the packet path)."""
    for name, value in zip(_SENDER_COUNTERS, (packets, octets, rtp_timestamp, ntp_timestamp), strict=True):
        setattr(sender, name, value)


ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def abs_send_time_id(transceiver: RTCRtpTransceiver) -> int:
    """The negotiated header-extension id of abs-send-time on `transceiver`, 0 when it was not negotiated."""
    for extension in transceiver._headerExtensions:
        if extension.uri == ABS_SEND_TIME and 0 < extension.id < 15:
            return int(extension.id)
    return 0
