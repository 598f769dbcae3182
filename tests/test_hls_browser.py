"""hls.js in a real Chromium: a viewer whose WebRTC cannot connect (relay-only ICE without a TURN server)
falls back to HLS by itself and says so; the ended show's recording plays from its VOD playlist.

The publisher is an aiortc peer over WHIP; the server is `run_server.py` with its media worker and packager,
inside the test network namespace (see test_pages_browser.py, whose fixtures this reuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request

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


async def _publish(server: ServerProcess) -> tuple[RTCPeerConnection, str, str]:
    """An aiortc H.264 + Opus publisher signed in as the host; returns it, its WHIP session URL and token."""
    _status, body, _headers = await asyncio.to_thread(
        _request, f"{server.url}/api/auth/login", {"email": HOST_EMAIL, "password": HOST_PASSWORD},
        {"Content-Type": "application/json"})
    token = json.loads(body)["access_token"]
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([H264_CONSTRAINED_BASELINE])
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    status, answer, headers = await asyncio.to_thread(
        _request, f"{server.url}/whip/{ROOM}", await offer(pc),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
    assert status == 201
    await pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))
    return pc, server.url + headers["Location"], token


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
        async with asyncio.timeout(30):  # end_grace_seconds is 0; the packager finalises the file
            while True:
                with contextlib.suppress(OSError):
                    if b"#EXT-X-ENDLIST" in (await asyncio.to_thread(_request, recording, method="GET"))[1]:
                        break
                await asyncio.sleep(0.5)
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
