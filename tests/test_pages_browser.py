"""A real browser goes live from /studio and another page plays the room from /live/{room}.

Debian's Chromium with a fake camera and microphone, against `run_server.py` as a subprocess with its media
worker. Chromium does no WebRTC over loopback, so this runs inside the test network namespace
(`tests/netns.sh`, as `make test` does), where the server offers the namespace's veth address.
Screenshots of every step land in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from tests.server_process import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(120)

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    # Otherwise a page that has not asked for the camera (the player) offers only mDNS .local candidates.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
HOST_EMAIL = "host@example.com"
COHOST_EMAIL = "cohost@example.com"
HOST_PASSWORD = "correct horse battery staple"
ROOM = "vintage-finds"
STEP_MS = 20_000

VIDEO_TIME = "document.getElementById('video').currentTime"
VIDEO_PLAYING = """() => {
  const video = document.getElementById('video');
  return video.videoWidth > 0 && video.currentTime > 0;
}"""


def namespace_address() -> str:
    """The first address tests/netns.sh gives the namespace; loopback outside it (where this test fails)."""
    return os.environ.get("PINSTREAM_TEST_ADDRESSES", "127.0.0.1").split(",")[0]


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    if not os.environ.get("PINSTREAM_TEST_ADDRESSES"):
        pytest.fail("PINSTREAM_TEST_ADDRESSES is not set: this test must run inside the test network namespace, "
                    "because Chromium does no WebRTC over loopback. Run it as root with "
                    "`tests/netns.sh .venv/bin/python -m pytest tests/test_pages_browser.py` (make test does).")
    config = (f"media:\n  ice:\n    host_addresses: [{namespace_address()}]\n"
              "rooms:\n  end_grace_seconds: 0\n")
    process = ServerProcess(tmp_path, config)
    for email, name in ((HOST_EMAIL, "Ann"), (COHOST_EMAIL, "Cy")):
        _create_host(process, email, name)
    return process


def _create_host(process: ServerProcess, email: str, name: str) -> None:
    password_file = process.directory / "host-password"
    password_file.write_text(HOST_PASSWORD)
    created = subprocess.run(
        [sys.executable, str(ROOT / "run_server.py"), "create-user", email, "--role", "host",
         "--display-name", name, "--password-file", str(password_file), "--config", str(process.config_path)],
        cwd=process.directory, env=process.env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr


@pytest.fixture
async def browser(server: ServerProcess) -> AsyncIterator[Browser]:
    server.start()
    try:
        async with async_playwright() as playwright:
            launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                        headless=True, timeout=STEP_MS)
            try:
                yield launched
            finally:
                await launched.close()
    finally:
        server.stop()


class Problems:
    """Uncaught errors and console errors of every page, reported with any failure."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def watch(self, page: Page, name: str) -> Page:
        page.on("pageerror", lambda error: self.lines.append(f"{name}: uncaught {error}"))
        page.on("console", lambda message: self._console(name, message))
        return page

    def _console(self, name: str, message: ConsoleMessage) -> None:
        # Chromium logs every 4xx as "Failed to load resource"; the pages expect some (not signed in yet,
        # not live yet) and handle them, so only other errors count.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.lines.append(f"{name}: console error {message.text}")


async def _shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def _sign_in_and_choose_room(studio: Page, server: ServerProcess, email: str = HOST_EMAIL,
                                   name: str = "Ann") -> None:
    await studio.goto(f"{server.url}/studio")
    await expect(studio.locator("#sign-in")).to_be_visible()
    await _shoot(studio, "studio-sign-in")
    await studio.fill("#email", email)
    await studio.fill("#password", "not the password")
    await studio.click("#sign-in-button")
    await expect(studio.locator("#sign-in-error")).to_have_text("Wrong email or password.")
    await studio.fill("#password", HOST_PASSWORD)
    await studio.click("#sign-in-button")
    await expect(studio.locator("#studio")).to_be_visible()
    await expect(studio.locator("#account")).to_have_text(name)
    await studio.fill("#room", ROOM)
    await studio.click("#room-button")
    await expect(studio.locator("#room-status")).to_contain_text("is ready")
    await expect(studio.locator("#whip-url")).to_have_value(f"{server.url}/whip/{ROOM}")
    # The camera preview runs before going live.
    await studio.wait_for_function("() => document.getElementById('preview').videoWidth > 0")
    await expect(studio.locator("#go-live")).to_be_enabled()


async def _rotate_stream_key(studio: Page) -> None:
    await studio.click("#key-show")
    await expect(studio.locator("#key-confirm")).to_contain_text("replaces the old one")
    await studio.click("#key-rotate")
    await expect(studio.locator("#stream-key")).to_have_value(re.compile(r"^psk_\S{20,}$"))
    await expect(studio.locator("#key-result")).to_contain_text("Shown only this once")


async def _assert_playing(viewer: Page) -> None:
    await viewer.wait_for_function(VIDEO_PLAYING, timeout=STEP_MS)
    await expect(viewer.locator("#player")).to_have_attribute("data-state", "playing")
    before = await viewer.evaluate(VIDEO_TIME)
    await asyncio.sleep(2)
    after = await viewer.evaluate(VIDEO_TIME)
    assert after - before > 1.0, f"the video did not advance: currentTime {before} -> {after}"
    width, height = await viewer.evaluate(
        "[document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]")
    assert width > 0 and height > 0


# Headless Chromium has no screen to pick: the studio's "screen" is a canvas that changes every frame.
FAKE_SCREEN = """
navigator.mediaDevices.getDisplayMedia = async () => {
  const canvas = Object.assign(document.createElement('canvas'), {width: 640, height: 360});
  const context = canvas.getContext('2d');
  let frame = 0;
  setInterval(() => {
    context.fillStyle = `hsl(${(frame++ * 7) % 360} 80% 50%)`;
    context.fillRect(0, 0, 640, 360);
  }, 33);
  return canvas.captureStream(30);
};
"""
SCREEN_PLAYING = """() => {
  const screen = document.getElementById('screen');
  return !screen.hidden && screen.videoWidth > 0 && screen.currentTime > 0;
}"""


async def _share_screen(studio: Page, viewer: Page) -> None:
    """The host shares a screen (a renegotiation over the socket): the viewer shows it beside the camera on the
    same connection; the host stops, and the viewer hides it."""
    await studio.click("#share-screen")
    await expect(studio.locator("#screen-status")).to_have_text("Sharing your screen.")
    await expect(studio.locator("#stop-screen")).to_be_visible()
    await viewer.wait_for_function(SCREEN_PLAYING, timeout=STEP_MS)
    await expect(viewer.locator("#player")).to_have_class(re.compile(r"\bsharing\b"))
    await _assert_playing(viewer)  # the camera plays on beside it
    await _shoot(viewer, "live-screen-share")
    await studio.click("#stop-screen")
    await expect(studio.locator("#share-screen")).to_be_visible()
    await expect(viewer.locator("#screen")).to_be_hidden(timeout=STEP_MS)
    await _assert_playing(viewer)


FEED_PLAYING = """() => {
  const tile = document.querySelector('#feeds video:not([hidden])');
  return tile !== null && tile.videoWidth > 0 && tile.currentTime > 0;
}"""


async def _cohost_goes_live(browser: Browser | None, server: ServerProcess, viewer: Page, problems: Problems) -> None:
    """Ann makes Cy a co-host; Cy goes live from another browser: the viewer sees Cy's camera as a tile beside
    the program, on the same connection, and the tile goes when Cy ends."""
    assert browser is not None
    async with aiohttp.ClientSession(server.url) as http:
        logins = []
        for email in (HOST_EMAIL, COHOST_EMAIL):
            async with http.post("/api/auth/login", json={"email": email, "password": HOST_PASSWORD}) as response:
                assert response.status == 200, await response.text()
                logins.append(await response.json())
        owner, cohost = logins
        async with http.post(f"/api/rooms/{ROOM}/cohosts", json={"user_id": cohost["user"]["id"]},
                             headers={"Authorization": f"Bearer {owner['access_token']}"}) as response:
            assert response.status == 200, await response.text()
    context = await browser.new_context()
    context.set_default_timeout(STEP_MS)
    try:
        studio = problems.watch(await context.new_page(), "cohost-studio")
        await _sign_in_and_choose_room(studio, server, COHOST_EMAIL, "Cy")
        await studio.click("#go-live")
        await expect(studio.locator("#status")).to_have_attribute("data-state", "live", timeout=STEP_MS)
        await viewer.wait_for_function(FEED_PLAYING, timeout=STEP_MS)
        await _shoot(viewer, "live-cohost-tile")
        await _assert_playing(viewer)  # the program (Ann) plays on
        await studio.click("#end-show")
        await expect(studio.locator("#status")).to_have_attribute("data-state", "ended", timeout=STEP_MS)
        await expect(viewer.locator("#feeds video")).to_be_hidden(timeout=STEP_MS)
        await _assert_playing(viewer)
    finally:
        await context.close()


async def _scenario(context: BrowserContext, server: ServerProcess, problems: Problems) -> None:
    studio = problems.watch(await context.new_page(), "studio")
    await studio.add_init_script(FAKE_SCREEN)
    await _sign_in_and_choose_room(studio, server)
    await _rotate_stream_key(studio)
    # A reload resumes the session from the refresh cookie and takes up the room chosen before.
    await studio.reload()
    await expect(studio.locator("#room-status")).to_contain_text("is ready")
    await expect(studio.locator("#go-live")).to_be_enabled()

    # A viewer who arrives before the show sees the waiting state, then the show without reloading.
    viewer = problems.watch(await context.new_page(), "live")
    await viewer.goto(f"{server.url}/live/{ROOM}")
    await expect(viewer.locator("#player")).to_have_attribute("data-state", "not-live", timeout=STEP_MS)
    await expect(viewer.locator("#overlay-title")).to_have_text("Not live yet")
    await _shoot(viewer, "live-waiting")

    await studio.click("#go-live")
    await expect(studio.locator("#status")).to_have_attribute("data-state", "live", timeout=STEP_MS)
    publish = await asyncio.to_thread(server.wait_for_log, "publish", 10)
    assert publish["kind"] == "browser"  # over the live-room socket
    assert "video/H264" in publish["codecs"], f"the studio should prefer H.264: {publish['codecs']}"

    await _assert_playing(viewer)
    await expect(viewer.locator("#unmute")).to_be_visible()
    await _shoot(viewer, "live-playing")
    await _shoot(studio, "studio-live")
    await viewer.click("#unmute")
    await expect(viewer.locator("#unmute")).to_be_hidden()
    assert await viewer.evaluate("document.getElementById('video').muted") is False

    await _share_screen(studio, viewer)
    await _cohost_goes_live(context.browser, server, viewer, problems)

    landing = problems.watch(await context.new_page(), "landing")
    await landing.goto(server.url + "/")
    await expect(landing.locator(f'a.show[href="/live/{ROOM}"]')).to_contain_text("Ann's room", timeout=STEP_MS)
    await _shoot(landing, "landing-live")
    await landing.close()

    await studio.click("#end-show")
    await expect(studio.locator("#status")).to_have_attribute("data-state", "ended", timeout=STEP_MS)
    await expect(viewer.locator("#player")).to_have_attribute("data-state", "not-live", timeout=STEP_MS)
    await _shoot(viewer, "live-ended")
    await _shoot(studio, "studio-ended")


async def run_scenario(scenario: Awaitable[None], server: ServerProcess, problems: Problems, limit_s: float,
                       context: BrowserContext | None = None, prefix: str = "failure") -> None:
    """Run a browser scenario within `limit_s`. A failure carries the pages' problems and the server log's
    tail, with a screenshot of every page of `context`; the context is closed either way. Passing also
    means no page logged an error."""
    try:
        async with asyncio.timeout(limit_s):
            await scenario
    except Exception as exc:
        for index, page in enumerate(context.pages if context is not None else []):
            with contextlib.suppress(Exception):  # a page that crashed must not hide the first error
                await _shoot(page, f"{prefix}-{index}")
        logs = server.log_path.read_text()[-4000:]
        raise AssertionError(f"{exc!r}\npage problems: {problems.lines}\nserver log tail:\n{logs}") from exc
    finally:
        if context is not None:
            await context.close()
    assert problems.lines == [], problems.lines


async def test_studio_goes_live_and_live_page_plays(browser: Browser, server: ServerProcess) -> None:
    problems = Problems()
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_MS)
    await run_scenario(_scenario(context, server, problems), server, problems, 100, context)
