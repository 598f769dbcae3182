"""The forwarding core with real aiortc peers: frames reach every viewer in order, none missing, and bad
offers are refused with the right error. The worker process and HTTP edges are tested elsewhere."""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
import random
import statistics
from collections.abc import Callable

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from media import rooms
from media.api import MediaError, MediaEvent
from media.codecs import H264_CONSTRAINED_BASELINE, VP8
from media.hub import ViewerLeg
from media.rooms import MediaService, viewer_bandwidth
from tests.media_peers import CounterTrack, Viewer, answer, media_settings, new_viewer, offer

pytestmark = pytest.mark.timeout(90)


async def _publish(service: MediaService, room: str, codec: str = "video/VP8", start: int = 0,
                   session_id: str | None = None) -> tuple[RTCPeerConnection, CounterTrack]:
    pc = RTCPeerConnection()
    track = CounterTrack(start)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences([VP8 if codec == "video/VP8" else H264_CONSTRAINED_BASELINE])
    result = await service.open_publisher(room, session_id or "pub-" + room, await offer(pc))
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
        hub = service.rooms["shop"].outputs["video"]
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
    three_videos = RTCPeerConnection()
    for _ in range(3):  # a camera and a screen share are fine; a third video is not
        three_videos.addTransceiver(CounterTrack(), direction="sendonly")
    with pytest.raises(MediaError) as refused:
        await service.open_publisher("shop", "p", await offer(three_videos))
    assert (refused.value.code, refused.value.status) == ("too_many_tracks", 400)
    publisher, _track = await _publish(service, "shop", "video/H264")
    second = RTCPeerConnection()  # a co-host must match the room's codec, so viewers can switch to it
    second.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([VP8])
    with pytest.raises(MediaError) as refused:
        await service.open_publisher("shop", "p2", await offer(second))
    assert (refused.value.code, refused.value.status) == ("no_forwardable_codec", 422)
    vp8_only = new_viewer([VP8])
    with pytest.raises(MediaError) as refused:
        await service.open_viewer("shop", "v", await offer(vp8_only.pc))
    assert (refused.value.code, refused.value.status) == ("viewer_codec_unsupported", 422)
    assert await service.close_session("pub-shop") and not await service.close_session("pub-shop")
    for pc in (viewer_pc, three_videos, second, vp8_only.pc, publisher):
        await pc.close()


def _drop_incoming_rtp(viewer: Viewer, rate: float, seed: int = 7) -> list[int]:
    """Lose `rate` of the RTP packets arriving at this viewer, retransmissions included; returns a counter."""
    transport = viewer.pc.getTransceivers()[0].receiver.transport
    original = transport._handle_rtp_data
    chance = random.Random(seed)
    dropped = [0]

    async def lossy(data: bytes, arrival_time_ms: int) -> None:
        if chance.random() < rate:
            dropped[0] += 1
            return
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = lossy
    return dropped


async def test_loss_on_a_viewer_leg_is_repaired_by_nack_and_rtx(service: MediaService) -> None:
    publisher, _track = await _publish(service, "shop")
    viewer = await _watch(service, "shop", "lossy")
    try:
        await _wait_for(lambda: viewer.connected_at is not None)
        dropped = _drop_incoming_rtp(viewer, 0.05)
        await _wait_for(lambda: len(viewer.counters) >= 240, seconds=40)
        counters = sorted(set(viewer.counters[10:]))
        expected = counters[-1] - counters[0] + 1
        assert dropped[0] >= 5, "the loss was not applied"
        assert len(counters) / expected >= 0.995, f"{expected - len(counters)} of {expected} frames lost"
        stats = (await service.stats())["rooms"]["shop"]["tracks"]["video"]
        assert stats["retransmitted"] > 0
    finally:
        await viewer.close()
        await publisher.close()


async def test_publisher_reconnects_and_viewers_continue_on_the_same_connection(service: MediaService) -> None:
    first, _track = await _publish(service, "shop", session_id="first")
    viewer = await _watch(service, "shop", "faithful")
    try:
        await _wait_for(lambda: len(viewer.counters) >= 30)
        await first.close()  # the publisher drops without saying goodbye
        await _wait_for(lambda: "first" not in service.rooms["shop"].publishers)
        assert service.rooms["shop"].viewers, "viewers must outlive their publisher"
        second, _again = await _publish(service, "shop", start=10_000, session_id="second")
        await _wait_for(lambda: viewer.counters[-1] >= 10_060, seconds=20)
        after = [c for c in viewer.counters if c >= 10_000]
        assert after == list(range(after[0], after[0] + len(after))), "frames after the reconnect were lost"
        assert viewer.pc.connectionState == "connected"
        await second.close()
    finally:
        await viewer.close()


async def test_program_feed_switch_between_cohosts(service: MediaService) -> None:
    host, _a = await _publish(service, "shop", session_id="host")
    cohost, _b = await _publish(service, "shop", start=20_000, session_id="cohost")
    viewer = await _watch(service, "shop", "watching")
    try:
        await _wait_for(lambda: len(viewer.counters) >= 20)
        assert max(viewer.counters) < 20_000, "the first publisher is the program feed"
        await service.set_program_feed("shop", "cohost")
        await _wait_for(lambda: viewer.counters[-1] >= 20_030, seconds=20)
        switched = [c for c in viewer.counters if c >= 20_000]
        assert switched == list(range(switched[0], switched[0] + len(switched)))
        await service.set_program_feed("shop", "host")
        await _wait_for(lambda: viewer.counters[-1] < 20_000, seconds=20)
        with pytest.raises(MediaError):
            await service.set_program_feed("shop", "nobody")
    finally:
        await viewer.close()
        await host.close()
        await cohost.close()


def _all_connected(viewers: list[Viewer]) -> bool:
    return all(viewer.connected_at is not None for viewer in viewers)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_viewer_churn_leaves_nothing_behind(service: MediaService) -> None:
    publisher, _track = await _publish(service, "shop")
    warmup = await _watch(service, "shop", "warmup")  # the first viewer starts the service's own timers
    await _wait_for(lambda: len(warmup.counters) >= 5)
    await warmup.close()
    await _wait_for(lambda: not service.rooms["shop"].viewers)
    await asyncio.sleep(0.5)
    tasks, fds = len(asyncio.all_tasks()), _open_fds()
    for round_number in range(5):  # 50 joins in all, ten at a time
        viewers = [await _watch(service, "shop", f"churn-{round_number}-{i}") for i in range(10)]
        await _wait_for(functools.partial(_all_connected, viewers), seconds=20)
        for i, viewer in enumerate(viewers):
            if i % 2:
                await service.close_session(f"churn-{round_number}-{i}")  # the server ends some
            await viewer.close()  # the viewers end the others
        await _wait_for(lambda: not service.rooms["shop"].viewers, seconds=20)
    await asyncio.sleep(1.0)
    room = service.rooms["shop"]
    assert all(not output.legs for output in room.outputs.values())
    assert set(service._sessions) == {"pub-shop"}
    assert len(asyncio.all_tasks()) <= tasks + 2, "tasks were left behind"
    assert _open_fds() <= fds + 2, "sockets were left behind"
    await publisher.close()


async def test_keyframe_cadence_only_when_asked(service: MediaService) -> None:
    publisher, _track = await _publish(service, "shop")
    viewer = await _watch(service, "shop", "v")
    try:
        await _wait_for(lambda: len(viewer.counters) >= 10)
        video = service.rooms["shop"].outputs["video"]
        before = video.keyframe_requests_upstream
        await asyncio.sleep(1.0)
        assert video.keyframe_requests_upstream == before, "no cadence unless something asks for it"
        await service.set_keyframe_cadence("shop", "0.25")
        await asyncio.sleep(1.2)
        assert video.keyframe_requests_upstream >= before + 3
        await service.set_keyframe_cadence("shop", "0")
        stopped = video.keyframe_requests_upstream
        await asyncio.sleep(0.8)
        assert video.keyframe_requests_upstream <= stopped + 1
        with pytest.raises(MediaError):
            await service.set_keyframe_cadence("shop", "soon")
    finally:
        await viewer.close()
        await publisher.close()


async def test_a_silent_publisher_is_closed() -> None:
    events: list[MediaEvent] = []
    settings = media_settings().model_copy(update={"silence_timeout_seconds": 1.0})
    service = MediaService(settings, events.append)
    try:
        publisher, _track = await _publish(service, "quiet")
        await _wait_for(lambda: any(e.type == "session.connected" for e in events))
        publisher.getSenders()[0].replaceTrack(None)  # connected, but sends nothing more
        await _wait_for(lambda: "pub-quiet" not in service._sessions, seconds=10)
        assert any(e.type == "session.closed" and e.session_id == "pub-quiet" for e in events)
        await publisher.close()
    finally:
        await service.close()


async def test_sessions_that_never_connect_are_closed() -> None:
    """A client that took its answer and vanished (it never starts ICE) holds nothing for long."""
    events: list[MediaEvent] = []
    service = MediaService(media_settings().model_copy(update={"connect_timeout_seconds": 1.0}), events.append)
    try:
        publisher, _track = await _publish(service, "shop")
        vanished = new_viewer()
        await service.open_viewer("shop", "vanished", await offer(vanished.pc))  # the answer is never applied
        await _wait_for(lambda: "vanished" not in service._sessions, seconds=10)
        assert any(e.type == "session.closed" and e.session_id == "vanished" for e in events)
        assert "pub-shop" in service._sessions, "a connected publisher is not affected"
        await vanished.close()
        await publisher.close()
    finally:
        await service.close()


async def test_the_publisher_gets_receiver_reports(service: MediaService) -> None:
    """Forwarding skips aiortc's decoder but keeps its receive statistics, so the publisher learns how its
    media arrives (loss, jitter) as it would from any receiver."""
    publisher, _track = await _publish(service, "shop")
    try:
        sender = publisher.getSenders()[0]

        async def remote_inbound() -> list[object]:
            report = await sender.getStats()
            return [stat for stat in report.values() if stat.type == "remote-inbound-rtp"]

        async with asyncio.timeout(10):
            while not await remote_inbound():  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await publisher.close()


def test_publisher_bandwidth_follows_nine_in_ten_viewers_above_a_floor() -> None:
    assert viewer_bandwidth([], 300_000) is None
    assert viewer_bandwidth([2_000_000], 300_000) == 2_000_000
    assert viewer_bandwidth([100_000], 300_000) == 300_000  # never below the floor
    # One viewer on a bad link among twenty does not lower the picture for everyone.
    assert viewer_bandwidth([400_000] + [3_000_000] * 19, 0) == 3_000_000
    assert viewer_bandwidth([400_000] * 5 + [3_000_000] * 15, 0) == 400_000


async def test_viewers_bandwidth_reaches_the_publisher_aggregated(service: MediaService,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Viewers' REMB is consumed per leg (they can estimate it: legs carry abs-send-time), and the REMB the
    publisher gets is capped by the aggregate: here one viewer on a 5 kbit/s link (and no floor)."""
    service.settings = service.settings.model_copy(update={"bandwidth_floor_kbps": 0})
    real_record = rooms._record_bandwidth
    reported: list[int] = []

    def weak_link(leg: ViewerLeg, bitrate: int) -> None:
        reported.append(bitrate)
        real_record(leg, min(bitrate, 5_000))

    monkeypatch.setattr(rooms, "_record_bandwidth", weak_link)
    publisher, _track = await _publish(service, "shop")
    source = service.rooms["shop"].publishers["pub-shop"].sources["video"]
    upstream: list[int] = []
    send_rtcp = source.receiver._send_rtcp

    async def record(packet: object) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            upstream.append(unpack_remb_fci(packet.fci)[0])
        await send_rtcp(packet)  # type: ignore[arg-type]

    monkeypatch.setattr(source.receiver, "_send_rtcp", record)
    viewer = await _watch(service, "shop", "weak")
    try:
        await _wait_for(lambda: bool(reported), seconds=20)
        await _wait_for(lambda: source.bandwidth_cap == 5_000)
        capped_from = len(upstream)
        await _wait_for(lambda: len(upstream) >= capped_from + 2, seconds=20)
        assert max(upstream[capped_from:]) <= 5_000
        assert max(reported) > 5_000, "the viewer's own estimate was not what reached the publisher"
    finally:
        await viewer.close()
        await publisher.close()
