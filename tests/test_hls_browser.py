"""hls.js in a real Chromium: a viewer whose WebRTC cannot connect (relay-only ICE without a TURN server)
falls back to HLS by itself and says so; the ended show's recording plays from its VOD playlist, also when
the publisher changed resolution mid-show (the recording is then in parts, one per resolution).

The publisher is an aiortc peer over WHIP; the server is `run_server.py` with its media worker and packager,
inside the test network namespace (see test_pages_browser.py, whose fixtures this reuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import urllib.request

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from playwright.async_api import Browser, Page, expect

from media.codecs import H264_CONSTRAINED_BASELINE
from tests import test_pages_browser
from tests.media_peers import CounterTrack, offer
from tests.server_process import ROOT, ServerProcess
from tests.test_pages_browser import (
    HOST_EMAIL,
    HOST_PASSWORD,
    ROOM,
    STEP_MS,
    VIDEO_PLAYING,
    VIDEO_TIME,
    Problems,
    _shoot,
    run_scenario,
)

pytestmark = pytest.mark.timeout(120)
HLS_JS = ROOT / "web" / "static" / "vendor" / "hls.min.js"
server = test_pages_browser.server
browser = test_pages_browser.browser

# WebRTC made to fail: no ICE server and relay-only, so the browser gathers no candidate at all.
NO_WEBRTC = """
(() => {
  const Native = window.RTCPeerConnection;
  function Failing(config) { return new Native({...(config || {}), iceServers: [], iceTransportPolicy: "relay"}); }
  Failing.prototype = Native.prototype;
  window.RTCPeerConnection = Failing;
})();
"""
PLAY_RECORDING = """async (url) => {
  const video = document.createElement("video");
  video.id = "recording";
  video.muted = true;
  document.body.append(video);
  const hls = new window.Hls({ enableWorker: false });
  hls.loadSource(url);
  hls.attachMedia(video);
  await new Promise((resolve) => hls.on(window.Hls.Events.MANIFEST_PARSED, resolve));
  await video.play();
}"""


def _request(url: str, body: dict[str, object] | str | None = None, headers: dict[str, str] | None = None,
             method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
    data = None if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, response.read(), dict(response.headers)


class _ResizingTrack(CounterTrack):
    """A camera that changes resolution mid-show: 320x240 frames, then 640x360 from `switch_after` on."""

    def __init__(self, switch_after: int) -> None:
        super().__init__()
        self.switch_after = switch_after

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        if self.count <= self.switch_after:
            return frame
        resized = frame.reformat(width=640, height=360)
        resized.pts, resized.time_base = frame.pts, frame.time_base
        return resized


async def _publish(server: ServerProcess, video: CounterTrack | None = None) -> tuple[RTCPeerConnection, str, str]:
    """An aiortc H.264 + Opus publisher signed in as the host; returns it, its WHIP session URL and token."""
    _status, body, _headers = await asyncio.to_thread(
        _request, f"{server.url}/api/auth/login", {"email": HOST_EMAIL, "password": HOST_PASSWORD},
        {"Content-Type": "application/json"})
    token = json.loads(body)["access_token"]
    pc = RTCPeerConnection()
    pc.addTransceiver(video or CounterTrack(), direction="sendonly").setCodecPreferences([H264_CONSTRAINED_BASELINE])
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    status, answer, headers = await asyncio.to_thread(
        _request, f"{server.url}/whip/{ROOM}", await offer(pc),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
    assert status == 201
    await pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))
    return pc, server.url + headers["Location"], token


async def _ended(playlist: str) -> None:
    """Until the recording's VOD playlist is whole (end_grace_seconds is 0; the packager finalises it)."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(OSError):
                if b"#EXT-X-ENDLIST" in (await asyncio.to_thread(_request, playlist, method="GET"))[1]:
                    return
            await asyncio.sleep(0.5)


async def _has_parts(api: str, count: int) -> None:
    """Until the show's recording has `count` parts (a new one starts at each resolution)."""
    async with asyncio.timeout(40):
        while True:
            with contextlib.suppress(OSError):  # 404 until the first keyframe is recorded
                if len(json.loads((await asyncio.to_thread(_request, api, method="GET"))[1])["parts"]) >= count:
                    return
            await asyncio.sleep(0.5)


def _resolution(url: str) -> tuple[int, int]:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height",
                             "-of", "json", url], capture_output=True, text=True, timeout=30, check=True)
    stream = json.loads(result.stdout)["streams"][0]
    return int(stream["width"]), int(stream["height"])


async def _advances(page: Page, expression: str) -> None:
    before = await page.evaluate(expression)
    await asyncio.sleep(2)
    after = await page.evaluate(expression)
    assert after - before > 1.0, f"the video did not advance: {before} -> {after}"


async def _scenario(browser: Browser, server: ServerProcess, problems: Problems) -> None:
    publisher, session_url, token = await _publish(server)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_MS)
    await context.add_init_script(NO_WEBRTC)
    viewer = problems.watch(await context.new_page(), "live-hls")
    try:
        await viewer.goto(f"{server.url}/live/{ROOM}")
        await expect(viewer.locator("#player")).to_have_attribute("data-transport", "hls", timeout=STEP_MS)
        await expect(viewer.locator("#hls-notice")).to_contain_text("playing over HLS")
        await viewer.wait_for_function(VIDEO_PLAYING, timeout=STEP_MS)
        await _advances(viewer, VIDEO_TIME)
        assert await viewer.evaluate("document.getElementById('video').srcObject") is None  # not WebRTC
        await _shoot(viewer, "live-hls-fallback")

        _status, live, _headers = await asyncio.to_thread(_request, f"{server.url}/api/shows?status=live",
                                                          method="GET")
        show_id = json.loads(live)["shows"][0]["id"]
        await asyncio.to_thread(_request, session_url, None, {"Authorization": f"Bearer {token}"}, "DELETE")
        await publisher.close()
        recording = f"{server.url}/recordings/{show_id}/index.m3u8"
        await _ended(recording)
        await viewer.evaluate(PLAY_RECORDING, recording)
        await viewer.wait_for_function("() => document.getElementById('recording').currentTime > 0.5",
                                       timeout=STEP_MS)
        await _advances(viewer, "document.getElementById('recording').currentTime")
    finally:
        await publisher.close()
        await context.close()


async def test_viewer_without_webrtc_plays_hls_and_the_recording(browser: Browser, server: ServerProcess) -> None:
    assert HLS_JS.is_file(), f"{HLS_JS} is missing: `make web/static/vendor/hls.min.js` installs it (make test does)"
    problems = Problems()
    await run_scenario(_scenario(browser, server, problems), server, problems, 100)


RECORDING_TIME = "document.getElementById('recording').currentTime"
SWITCH_AFTER = 150
"""Frames (5 s) before the publisher's camera changes resolution."""


async def _resolution_change(browser: Browser, server: ServerProcess, problems: Problems) -> None:
    publisher, session_url, token = await _publish(server, _ResizingTrack(SWITCH_AFTER))
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_MS)
    try:
        _status, live, _headers = await asyncio.to_thread(_request, f"{server.url}/api/shows?status=live",
                                                          method="GET")
        show_id = json.loads(live)["shows"][0]["id"]
        api = f"{server.url}/api/shows/{show_id}/recording"
        await _has_parts(api, 2)
        await asyncio.sleep(4)  # some of the second part
        await asyncio.to_thread(_request, session_url, None, {"Authorization": f"Bearer {token}"}, "DELETE")
        await publisher.close()
        await _ended(f"{server.url}/recordings/{show_id}/index.m3u8")

        recording = json.loads((await asyncio.to_thread(_request, api, method="GET"))[1])
        base = f"/recordings/{show_id}"
        assert recording["parts"] == [f"{base}/part1.mp4", f"{base}/recording.mp4"], recording
        assert recording["mp4"] == f"{base}/recording.mp4"  # the latest part
        sizes = [await asyncio.to_thread(_resolution, server.url + part) for part in recording["parts"]]
        assert sizes == [(320, 240), (640, 360)], sizes

        viewer = problems.watch(await context.new_page(), "recording-parts")
        await viewer.goto(f"{server.url}/live/{ROOM}")  # the show has ended: the page only brings hls.js
        await viewer.evaluate(PLAY_RECORDING, server.url + recording["playlist"])
        await viewer.wait_for_function("() => document.getElementById('recording').videoWidth === 320")
        await viewer.wait_for_function("() => document.getElementById('recording').videoWidth === 640",
                                       timeout=30_000)
        await _advances(viewer, RECORDING_TIME)  # and it goes on playing after the change
        await _shoot(viewer, "recording-after-resolution-change")
    finally:
        await publisher.close()


async def test_a_recording_across_a_resolution_change_plays_in_parts(browser: Browser,
                                                                     server: ServerProcess) -> None:
    problems = Problems()
    await run_scenario(_resolution_change(browser, server, problems), server, problems, 110)
