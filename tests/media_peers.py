"""Real aiortc peers for SFU tests: a publisher whose frames carry a counter, viewers that decode it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from config.schema import IceSettings, MediaSettings
from media.api import MediaEvent
from media.rooms import MediaService

BITS = 16
BLOCK = 16
WIDTH, HEIGHT = 320, 240


def veth_address() -> str:
    """The namespace's veth address under `make test`; loopback elsewhere (aiortc peers accept it)."""
    addresses = os.environ.get("PINSTREAM_TEST_ADDRESSES", "")
    return addresses.split(",")[0] if addresses else "127.0.0.1"


def media_settings() -> MediaSettings:
    return MediaSettings(ice=IceSettings(host_addresses=[veth_address()]))


@pytest.fixture
async def service() -> AsyncIterator[MediaService]:
    """An in-process MediaService on the test addresses, closed after the test."""
    events: list[MediaEvent] = []
    media = MediaService(media_settings(), events.append)
    yield media
    await media.close()


class CounterTrack(VideoStreamTrack):
    """30 fps frames with the frame number drawn as 16 black/white blocks, so it survives compression."""

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.count = start
        self.sent_at: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
        for bit in range(BITS):
            value = 255 if (self.count >> bit) & 1 else 0
            image[0:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = value
        frame = av.VideoFrame.from_ndarray(np.stack([image] * 3, axis=-1), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent_at[self.count & 0xFFFF] = time.monotonic()
        self.count += 1
        return frame


def read_counter(frame: av.VideoFrame) -> int:
    gray = frame.to_ndarray(format="gray")
    value = 0
    for bit in range(BITS):
        if gray[2:BLOCK - 2, bit * BLOCK + 2:(bit + 1) * BLOCK - 2].mean() > 128:
            value |= 1 << bit
    return value


@dataclass
class Viewer:
    pc: RTCPeerConnection
    counters: list[int] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    connected_at: float | None = None
    task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.pc.close()


async def offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    return pc.localDescription.sdp


async def answer(pc: RTCPeerConnection, sdp: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))


def new_viewer(codecs: list[RTCRtpCodecCapability] | None = None) -> Viewer:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    if codecs is not None:
        transceiver.setCodecPreferences(codecs)
    viewer = Viewer(pc)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and viewer.connected_at is None:
            viewer.connected_at = time.monotonic()

    @pc.on("track")
    def on_track(track: VideoStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    viewer.counters.append(read_counter(frame))
                    viewer.arrived_at.append(time.monotonic())

        viewer.task = asyncio.ensure_future(read())

    return viewer
