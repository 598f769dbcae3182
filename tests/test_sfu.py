"""The forwarding core with real aiortc peers: frames reach every viewer in order, none missing, and bad
offers are refused with the right error. The worker process and HTTP edges are tested elsewhere."""

from __future__ import annotations

import asyncio
import bisect
import statistics
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc import RTCPeerConnection

from media.api import MediaError, MediaEvent
from media.codecs import H264_CONSTRAINED_BASELINE, VP8
from media.rooms import MediaService
from tests.media_peers import CounterTrack, Viewer, answer, media_settings, new_viewer, offer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def service() -> AsyncIterator[MediaService]:
    events: list[MediaEvent] = []
    media = MediaService(media_settings(), events.append)
    yield media
    await media.close()


async def _publish(service: MediaService, room: str,
                   codec: str = "video/VP8") -> tuple[RTCPeerConnection, CounterTrack]:
    pc = RTCPeerConnection()
    track = CounterTrack()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences([VP8 if codec == "video/VP8" else H264_CONSTRAINED_BASELINE])
    result = await service.open_publisher(room, "pub-" + room, await offer(pc))
    assert result.codecs == [codec]
    await answer(pc, result.sdp)
    return pc, track


async def _watch(service: MediaService, room: str, name: str) -> Viewer:
    viewer = new_viewer()
    result = await service.open_viewer(room, name, await offer(viewer.pc))
    await answer(viewer.pc, result.sdp)
    return viewer


async def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll: the peers' frame lists are filled by aiortc's own tasks, which signal nothing."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
async def test_every_viewer_decodes_every_frame_in_order(service: MediaService, codec: str) -> None:
    publisher, _track = await _publish(service, "shop", codec)
    viewers = [await _watch(service, "shop", f"viewer-{i}") for i in range(3)]
    try:
        await _wait_for(lambda: all(len(v.counters) >= 60 for v in viewers), seconds=30)
        stats = await service.stats()
        assert stats["rooms"]["shop"]["viewers"] == 3
        for viewer in viewers:
            counters = viewer.counters
            assert counters == list(range(counters[0], counters[0] + len(counters))), "a frame was missed"
            assert viewer.connected_at is not None
            assert viewer.arrived_at[0] - viewer.connected_at < 1.0
        first_frame = [v.arrived_at[0] - v.connected_at for v in viewers if v.connected_at]
        assert statistics.median(first_frame) <= 0.3, f"first frame after connect: {first_frame}"
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close()


async def test_a_joining_viewer_starts_on_a_fresh_keyframe(service: MediaService) -> None:
    publisher, _track = await _publish(service, "shop")
    first = await _watch(service, "shop", "first")
    try:
        await _wait_for(lambda: len(first.counters) >= 30)
        hub = service.rooms["shop"].publisher.hubs["video"]  # type: ignore[union-attr]
        before = hub.keyframe_requests_upstream
        late = await _watch(service, "shop", "late")
        await _wait_for(lambda: len(late.counters) >= 10)
        assert hub.keyframe_requests_upstream > before
        # What the first viewer showed when the late one's first frame arrived: the late one is no further behind.
        live = first.counters[bisect.bisect_right(first.arrived_at, late.arrived_at[0]) - 1]
        assert late.counters[0] >= live - 2, f"the late viewer started on a stale frame ({late.counters[0]} < {live})"
        await late.close()
    finally:
        await first.close()
        await publisher.close()


async def test_refusals(service: MediaService) -> None:
    viewer_pc = RTCPeerConnection()
    viewer_pc.addTransceiver("video", direction="recvonly")
    with pytest.raises(MediaError) as refused:
        await service.open_viewer("nowhere", "v", await offer(viewer_pc))
    assert (refused.value.code, refused.value.status) == ("not_live", 404)
    with pytest.raises(MediaError) as refused:
        await service.open_publisher("shop", "p", "v=0\r\nthis is not sdp")
    assert refused.value.status == 400
    two_videos = RTCPeerConnection()
    two_videos.addTransceiver(CounterTrack(), direction="sendonly")
    two_videos.addTransceiver(CounterTrack(), direction="sendonly")
    with pytest.raises(MediaError) as refused:
        await service.open_publisher("shop", "p", await offer(two_videos))
    assert (refused.value.code, refused.value.status) == ("too_many_tracks", 400)
    publisher, _track = await _publish(service, "shop", "video/H264")
    second = RTCPeerConnection()
    second.addTransceiver(CounterTrack(), direction="sendonly")
    with pytest.raises(MediaError) as refused:
        await service.open_publisher("shop", "p2", await offer(second))
    assert (refused.value.code, refused.value.status) == ("publisher_exists", 409)
    vp8_only = new_viewer([VP8])
    with pytest.raises(MediaError) as refused:
        await service.open_viewer("shop", "v", await offer(vp8_only.pc))
    assert (refused.value.code, refused.value.status) == ("viewer_codec_unsupported", 422)
    assert await service.close_session("pub-shop") and not await service.close_session("pub-shop")
    for pc in (viewer_pc, two_videos, second, vp8_only.pc, publisher):
        await pc.close()
