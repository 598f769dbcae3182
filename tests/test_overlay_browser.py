"""The first show sold end to end in real browsers: the host goes live from /studio and pins a product; a
viewer on /live/{room} sees the card within a second over the playing video, reserves, pays with the test
card; the stock drops on both pages and the order is in the viewer's account. Then, while the show runs, a
2,000-buyer flash sale (bench/flash_sale.py's buyers) hits the same server, and the viewer's video shows no
frame gap over 200 ms (measured in the page with requestVideoFrameCallback).

Debian's Chromium with a fake camera, `run_server.py` as a subprocess, inside the test network namespace
(see tests/test_pages_browser.py, whose browser set-up this reuses). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import time
import urllib.request
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from bench.flash_sale import Shared, _seed, _worker_main
from tests import test_pages_browser
from tests.server_process import ServerProcess
from tests.test_pages_browser import (
    ARTIFACTS,
    HOST_EMAIL,
    HOST_PASSWORD,
    ROOM,
    STEP_MS,
    Problems,
    _assert_playing,
    _shoot,
    _sign_in_and_choose_room,
    run_scenario,
)

pytestmark = pytest.mark.timeout(240)
# The server (with the host account) and the browser of the page test, as fixtures of this module too.
server = test_pages_browser.server
browser = test_pages_browser.browser
VIEWER_EMAIL = "vic@example.com"
VIEWER_PASSWORD = "another horse battery staple"
BUYERS = 2000
SALE_UNITS = 50
FRAME_GAP_LIMIT_MS = 200
BASELINE_SECONDS = 20
FRAME_WATCH = """() => {
  const video = document.getElementById('video');
  window.frameGaps = { last: 0, max: 0, frames: 0, lastReceived: 0, maxReceived: 0 };
  const onFrame = (now, frame) => {
    const gaps = window.frameGaps;
    if (gaps.last) gaps.max = Math.max(gaps.max, now - gaps.last);
    if (gaps.lastReceived && frame.receiveTime) {
      gaps.maxReceived = Math.max(gaps.maxReceived, frame.receiveTime - gaps.lastReceived);
    }
    gaps.last = now;
    gaps.lastReceived = frame.receiveTime || 0;
    gaps.frames += 1;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


KEEP_PEERS = """(() => {
  const Original = window.RTCPeerConnection;
  window.peerConnections = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.peerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})()"""
SENDER_STATS = """async () => {
  const found = [];
  for (const pc of window.peerConnections || []) {
    (await pc.getStats()).forEach((report) => {
      if (report.type === 'outbound-rtp' && report.kind === 'video') found.push({
        fps: report.framesPerSecond, reason: report.qualityLimitationReason,
        durations: report.qualityLimitationDurations, encoded: report.framesEncoded});
    });
  }
  return found;
}"""
CARD_WATCH = """(productId) => {
  window.cardSeenAt = null;
  const cards = document.getElementById('cards');
  new MutationObserver(() => {
    if (!window.cardSeenAt && cards.querySelector(`.product-card[data-product="${productId}"]`)) {
      window.cardSeenAt = Date.now();
    }
  }).observe(cards, { childList: true, subtree: true });
}"""


def _api(server: ServerProcess, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    request = urllib.request.Request(f"{server.url}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _login(server: ServerProcess, email: str, password: str) -> str:
    return str(_api(server, "POST", "/api/auth/login", {"email": email, "password": password})["access_token"])


def _stock_on_page(page: Page, product_id: int) -> Any:
    return page.locator(f'.product-card[data-product="{product_id}"] .stock')


def _buyers(shared: Shared, buyers: list[tuple[int, str]], seed: int, results: Any) -> None:
    """The buyers' client process, at the lowest CPU priority: in a real sale they are thousands of phones,
    not processes competing with the browsers of this test for the same two cores."""
    os.nice(19)
    _worker_main(shared, buyers, seed, results)


async def _flash_sale_crowd(server: ServerProcess) -> dict[str, Any]:
    """bench/flash_sale.py's race, at full size, against the server of the show: 2,000 buyers for 50 units."""
    database_url = f"sqlite+aiosqlite:///{server.directory / 'data' / 'pinstream.db'}"
    secret = (server.directory / "data" / "secret_key").read_text().strip()  # the key the server made itself
    product_id, tokens = await _seed(database_url, BUYERS, SALE_UNITS, secret)
    context = multiprocessing.get_context("spawn")
    shared = Shared(url=server.url, product_id=product_id, trivial_start=context.Event(),
                    trivial_stop=context.Event(), race_start=context.Event(), race_stop=context.Event(),
                    keys=True, polite=True)
    shared.trivial_start.set()
    shared.trivial_stop.set()  # no warm-up phase: straight into the race
    results = context.Queue()
    slices = [list(enumerate(tokens))[index::2] for index in range(2)]
    workers = [context.Process(target=_buyers, args=(shared, part, seed, results), daemon=True)
               for seed, part in enumerate(slices)]
    for worker in workers:
        worker.start()
    await asyncio.sleep(3.0)  # the workers open their connections
    shared.race_start.set()
    started = time.monotonic()
    sold = 0
    while time.monotonic() - started < 90:
        variant = (await asyncio.to_thread(_api, server, "GET", f"/api/products/{product_id}"))["variants"][0]
        sold = variant["sold"]
        if sold >= SALE_UNITS:
            break
        await asyncio.sleep(0.2)
    shared.race_stop.set()
    collected = [await asyncio.to_thread(results.get, True, 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    return {"sold": sold, "attempts": sum(part["attempts"] for part in collected),
            "seconds": round(time.monotonic() - started, 1)}


async def _scenario(context: BrowserContext, server: ServerProcess, problems: Problems) -> None:
    studio = problems.watch(await context.new_page(), "studio")
    await _sign_in_and_choose_room(studio, server)
    await studio.click("#go-live")
    await expect(studio.locator("#status")).to_have_attribute("data-state", "live", timeout=STEP_MS)
    await expect(studio.locator("#show-controls")).to_be_visible()

    host_token = await asyncio.to_thread(_login, server, HOST_EMAIL, HOST_PASSWORD)
    live_show = (await asyncio.to_thread(_api, server, "GET", "/api/shows"))["shows"][0]
    product = await asyncio.to_thread(_api, server, "POST", "/api/products", {
        "title": "90s denim jacket", "price_minor": 4500, "stock": 10, "status": "active"}, host_token)
    await asyncio.to_thread(_api, server, "POST", f"/api/shows/{live_show['id']}/lineup",
                            {"product_id": product["id"]}, host_token)
    await asyncio.to_thread(_api, server, "POST", "/api/auth/signup",
                            {"email": VIEWER_EMAIL, "password": VIEWER_PASSWORD, "display_name": "Vic"})

    viewer = problems.watch(await context.new_page(), "live")
    await viewer.goto(f"{server.url}/live/{ROOM}")
    await _assert_playing(viewer)
    await expect(viewer.locator("#viewers")).to_contain_text("watching")

    await studio.click("#lineup-reload")
    pin = studio.locator(f'#lineup li[data-product="{product["id"]}"] button')
    await expect(pin).to_have_text("Pin")
    # Both times taken in the pages (one browser, one clock): the click in the studio, the card in the DOM.
    await viewer.evaluate(CARD_WATCH, product["id"])
    await studio.evaluate("document.addEventListener('click', () => { window.clickedAt = Date.now(); }, "
                          "{capture: true, once: true})")
    await pin.click()
    card = viewer.locator(f'.product-card[data-product="{product["id"]}"]')
    await card.wait_for(state="visible", timeout=STEP_MS)
    seen_after = await viewer.evaluate("window.cardSeenAt") - await studio.evaluate("window.clickedAt")
    assert 0 < seen_after < 1000, f"the card appeared {seen_after} ms after the click"
    await expect(card.locator(".price")).to_contain_text("45")
    await expect(_stock_on_page(viewer, product["id"])).to_have_text("10 left")
    await expect(pin).to_have_text("Unpin")
    await _shoot(viewer, "overlay-live-pinned")

    # A flash sale from the studio: the card shows the sale price and counts down to the server's deadline.
    await studio.select_option("#sale-product", str(product["id"]))
    await studio.fill("#sale-price", "3000")
    await studio.fill("#sale-quantity", "5")
    await studio.fill("#sale-duration", "120")
    await studio.click("#sale-start")
    await expect(studio.locator("#sale-status")).to_contain_text("Sale running: ends in 1:")
    await expect(card.locator(".price")).to_contain_text("30")
    await expect(card.locator(".sale-countdown")).to_have_text(re.compile(r"^Flash sale ends in (2:00|1:[0-5]\d)$"))

    await viewer.fill("#viewer-email", VIEWER_EMAIL)
    await viewer.fill("#viewer-password", VIEWER_PASSWORD)
    await viewer.click("#viewer-sign-in-button")
    await expect(viewer.locator("#viewer-account")).to_have_text("Signed in as Vic")
    await card.locator("button.reserve").click()
    await expect(viewer.locator("#checkout")).to_be_visible()
    await expect(viewer.locator("#hold-countdown")).to_have_text(re.compile(r"^[45]:\d\d$"))
    await expect(_stock_on_page(viewer, product["id"])).to_have_text("9 left")
    await expect(studio.locator(f'#lineup li[data-product="{product["id"]}"]')).to_contain_text("9 left")
    # Chat: text stays text; the host deletes a message and it goes from the viewer's page too.
    await viewer.fill("#chat-text", "<b>is it vintage?</b>")
    await viewer.click("#chat-form button")
    host_line = studio.locator("#host-chat li", has_text="<b>is it vintage?</b>")
    await expect(host_line).to_be_visible()
    await expect(viewer.locator("#chat-log li b")).to_have_count(0)
    await host_line.get_by_role("button", name="Delete").click()
    await expect(viewer.locator("#chat-log li", has_text="is it vintage?")).to_have_count(0)

    await viewer.fill("#card-number", "4242 4242 4242 4242")
    await viewer.click("#pay")
    await expect(viewer.locator("#order-status")).to_have_attribute("data-state", "paid")
    await expect(studio.locator("#ticker li")).to_contain_text("90s denim jacket")
    viewer_token = await asyncio.to_thread(_login, server, VIEWER_EMAIL, VIEWER_PASSWORD)
    orders = (await asyncio.to_thread(_api, server, "GET", "/api/orders", None, viewer_token))["orders"]
    assert [(o["status"], o["total_minor"]) for o in orders] == [("paid", 3000)], orders
    await _shoot(viewer, "overlay-live-paid")
    await _shoot(studio, "overlay-studio-paid")

    await viewer.evaluate(FRAME_WATCH)
    await asyncio.sleep(1.0)
    await viewer.evaluate("window.frameGaps.max = 0; window.frameGaps.maxReceived = 0")
    await asyncio.sleep(BASELINE_SECONDS)  # the same show without the crowd, for comparison
    quiet = await viewer.evaluate("window.frameGaps")
    await viewer.evaluate("window.frameGaps.max = 0; window.frameGaps.maxReceived = 0")
    crowd = await _flash_sale_crowd(server)
    gaps = await viewer.evaluate("window.frameGaps")
    # The race itself is bench/flash_sale.py's to judge; here it must have run: every buyer tried, units sold.
    assert crowd["sold"] > 0 and crowd["attempts"] >= BUYERS, crowd
    assert gaps["frames"] > 20 * crowd["seconds"], (gaps, crowd)
    sender = await studio.evaluate(SENDER_STATS)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overlay-frame-gaps.json").write_text(json.dumps(
        {"quiet": quiet, "crowd": gaps, "flash_sale": crowd, "sender": sender, "load": os.getloadavg()}))
    assert gaps["max"] <= FRAME_GAP_LIMIT_MS, (
        f"largest gap between frames shown {gaps['max']:.0f} ms (received {gaps['maxReceived']:.0f} ms); "
        f"without the crowd {quiet['max']:.0f} ms ({quiet['maxReceived']:.0f} ms)", crowd, sender)
    await _assert_playing(viewer)
    await _shoot(viewer, "overlay-live-after-crowd")


async def test_first_show_sold_end_to_end(browser: Browser, server: ServerProcess) -> None:
    problems = Problems()
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_MS)
    await context.add_init_script(KEEP_PEERS)
    await run_scenario(_scenario(context, server, problems), server, problems, 220, context, "overlay-failure")
