"""Taps with a real aiortc publisher: the room's output arrives as plain UDP datagrams with the tap header,
the epoch changes with the program source, and bad requests are refused."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from aiortc import RTCPeerConnection

from media.api import MediaError
from media.codecs import VP8
from media.rooms import MediaService
from media.tap import CODECS, KINDS, TAP_HEADER, TAP_MAGIC, TAP_VERSION
from tests.media_peers import CounterTrack, answer, offer

pytestmark = pytest.mark.timeout(60)


async def _publish(service: MediaService, room: str, session_id: str) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([VP8])
    result = await service.open_publisher(room, session_id, await offer(pc))
    await answer(pc, result.sdp)
    return pc


async def _datagrams(sock: socket.socket, count: int) -> list[tuple[tuple[int, ...], bytes]]:
    loop = asyncio.get_running_loop()
    got = []
    async with asyncio.timeout(15):
        while len(got) < count:
            data = await loop.sock_recv(sock, 65536)
            got.append((TAP_HEADER.unpack_from(data), data[TAP_HEADER.size:]))
    return got


async def test_a_tap_receives_the_program_and_a_new_epoch_on_a_feed_switch(service: MediaService) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    host = await _publish(service, "shop", "host")
    cohost = await _publish(service, "shop", "cohost")
    try:
        codecs = await service.open_tap("shop", "t1", "127.0.0.1", str(sock.getsockname()[1]))
        assert codecs == ["video/VP8"]
        first = await _datagrams(sock, 40)
        (magic, version, kind, codec, _reserved, epoch, arrival_ns), rtp = first[0]
        assert (magic, version, kind, codec) == (TAP_MAGIC, TAP_VERSION, KINDS["video"], CODECS["video/vp8"])
        assert rtp[0] == 0x80 and arrival_ns > 1_600_000_000 * 10**9
        sequences = [struct.unpack_from("!H", packet, 2)[0] for _header, packet in first]
        assert sequences == [(sequences[0] + n) & 0xFFFF for n in range(len(sequences))]
        assert {header[5] for header, _packet in first} == {epoch}
        await service.set_program_feed("shop", "cohost")
        later = await _datagrams(sock, 200)
        assert later[-1][0][5] > epoch
        assert await service.close_tap("t1") and not await service.close_tap("t1")
    finally:
        await host.close()
        await cohost.close()
        sock.close()


async def test_tap_refusals(service: MediaService) -> None:
    with pytest.raises(MediaError) as not_live:
        await service.open_tap("nowhere", "t", "127.0.0.1", "4000")
    assert not_live.value.status == 404
    for host, port, field in (("10.0.0.1", "4000", "host"), ("127.0.0.1", "0", "port"),
                              ("127.0.0.1", "x", "port")):
        with pytest.raises(MediaError) as refused:
            await service.open_tap("nowhere", "t", host, port)
        assert (refused.value.status, refused.value.field) == (400, field)
