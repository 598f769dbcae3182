"""Through Debian's coturn: our credentials are the ones it accepts (and it refuses them once expired), and a
Chromium viewer that may only use relay candidates plays a live show from /live/{room}.

Runs inside the test network namespace (`tests/netns.sh`, as `make test` does): coturn listens on the
namespace's second veth address and relays to the media server on the first, as a TURN server in front of a
firewalled network would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aioice import stun, turn
from aiortc import RTCPeerConnection
from playwright.async_api import async_playwright

from media.codecs import VP8
from signaling.ice_servers import turn_credential
from tests.media_peers import CounterTrack, answer, offer
from tests.server_process import ROOT, ServerProcess
from tests.turn_server import TurnServer

pytestmark = pytest.mark.timeout(90)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]
HOST_EMAIL = "host@example.com"
ROOM = "relay-room"
STEP_MS = 20_000

# Every peer connection the page makes may only use relay candidates: as on a network that lets nothing
# through but the TURN server. The ICE servers the page passes (ours, from /api/ice-servers) are kept.
RELAY_ONLY = """(() => {
  const Native = window.RTCPeerConnection;
  window.__peerConnections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) {
      super({ ...config, iceTransportPolicy: "relay" }, ...rest);
      window.__peerConnections.push(this);
    }
  };
})();"""

VIDEO_PLAYING = """() => {
  const video = document.getElementById('video');
  return video.videoWidth > 0 && video.currentTime > 0;
}"""

# The candidate types of the pair the viewer's connection settled on, and the ICE servers it was given.
SELECTED_PAIR = """async () => {
  const pc = window.__peerConnections[window.__peerConnections.length - 1];
  const stats = [...(await pc.getStats()).values()];
  const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = stats.find((s) => s.id === transport.selectedCandidatePairId);
  const local = stats.find((s) => s.id === pair.localCandidateId);
  const remote = stats.find((s) => s.id === pair.remoteCandidateId);
  return { local: local.candidateType, remote: remote.candidateType, state: pair.state,
           iceServers: pc.getConfiguration().iceServers, policy: pc.getConfiguration().iceTransportPolicy };
}"""


def _addresses() -> list[str]:
    addresses = [a for a in os.environ.get("PINSTREAM_TEST_ADDRESSES", "").split(",") if a]
    if len(addresses) < 2:
        pytest.fail("PINSTREAM_TEST_ADDRESSES does not name two addresses: this test must run inside the test "
                    "network namespace (Chromium does no WebRTC over loopback). Run it as root with "
                    "`tests/netns.sh .venv/bin/python -m pytest tests/test_turn_relay.py` (make test does).")
    return addresses


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[TurnServer]:
    server = TurnServer(tmp_path / "coturn", _addresses()[1]).start()
    try:
        yield server
    finally:
        server.stop()


async def _allocate(server: TurnServer, username: str, password: str) -> tuple[str, int]:
    transport, _ = await asyncio.wait_for(turn.create_turn_endpoint(
        asyncio.DatagramProtocol, (server.address, server.port), username, password), 10)
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_coturn_accepts_our_credentials_until_they_expire(coturn: TurnServer) -> None:
    fresh = turn_credential(coturn.secret, "fresh-session", 300)
    relayed = await _allocate(coturn, fresh.username, fresh.credential)
    assert relayed[0] == coturn.address
    expired = turn_credential(coturn.secret, "old-session", 60, now=fresh.expires_at - 300 - 120)
    forged = turn_credential("not the shared secret", "forged-session", 300)
    for refused in (expired, forged):
        with pytest.raises(stun.TransactionFailed) as caught:
            await _allocate(coturn, refused.username, refused.credential)
        assert caught.value.response.attributes["ERROR-CODE"][0] == 401
    assert coturn.allocations() == [fresh.username]


@pytest.fixture
def server(tmp_path: Path, coturn: TurnServer) -> Iterator[ServerProcess]:
    config = (f"media:\n  ice:\n    host_addresses: [{_addresses()[0]}]\n"
              f"  turn:\n    urls: ['{coturn.url}']\n    credential_ttl_seconds: 600\n"
              "rooms:\n  end_grace_seconds: 0\n")
    process = ServerProcess(tmp_path, config, env={"PINSTREAM_TURN_SECRET": coturn.secret})
    password_file = tmp_path / "host-password"
    password_file.write_text("correct horse battery staple")
    common = ["--config", str(process.config_path)]
    created = subprocess.run(
        [sys.executable, str(ROOT / "run_server.py"), "create-user", HOST_EMAIL, "--role", "host",
         "--password-file", str(password_file), *common],
        cwd=tmp_path, env=process.env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _stream_key(server: ServerProcess) -> str:
    rotated = subprocess.run(
        [sys.executable, str(ROOT / "run_server.py"), "stream-key", HOST_EMAIL, "--config", str(server.config_path)],
        cwd=server.directory, env=server.env, capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    return rotated.stdout.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def _publishing(server: ServerProcess) -> AsyncIterator[RTCPeerConnection]:
    """An aiortc publisher (VP8 with a frame counter drawn in) live in ROOM over WHIP."""
    key = await asyncio.to_thread(_stream_key, server)
    publisher = RTCPeerConnection()
    publisher.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([VP8])
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(f"{server.url}/whip/{ROOM}", data=await offer(publisher), headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {key}"})
            assert response.status == 201, await response.text()
            await answer(publisher, await response.text())
        yield publisher
    finally:
        await publisher.close()


async def test_relay_only_chromium_viewer_plays_through_coturn(server: ServerProcess, coturn: TurnServer) -> None:
    async with asyncio.timeout(75), _publishing(server), async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                                   timeout=STEP_MS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(STEP_MS)
            await context.add_init_script(RELAY_ONLY)
            viewer = await context.new_page()
            problems: list[str] = []
            viewer.on("pageerror", lambda error: problems.append(f"uncaught {error}"))
            await viewer.goto(f"{server.url}/live/{ROOM}")
            try:
                await viewer.wait_for_function(VIDEO_PLAYING, timeout=STEP_MS)
            except Exception as exc:
                state = await viewer.evaluate("document.getElementById('player').dataset.state")
                raise AssertionError(f"the relay-only viewer does not play (state {state!r}, {problems}):\n"
                                     f"coturn:\n{coturn.log()[-3000:]}\nserver:\n"
                                     f"{server.log_path.read_text()[-3000:]}") from exc
            before = await viewer.evaluate("document.getElementById('video').currentTime")
            await asyncio.sleep(2)
            after = await viewer.evaluate("document.getElementById('video').currentTime")
            assert after - before > 1.0, f"the video did not advance: currentTime {before} -> {after}"
            assert await viewer.evaluate("document.getElementById('video').videoWidth") > 0

            selected = await viewer.evaluate(SELECTED_PAIR)
            assert selected["policy"] == "relay" and selected["local"] == "relay", selected
            turn_servers = [s for s in selected["iceServers"] if s.get("username")]
            assert [s["urls"] for s in turn_servers] == [[coturn.url]], selected["iceServers"]
            # The allocation coturn logged is the one made with the credentials /api/ice-servers handed out.
            assert turn_servers[0]["username"] in coturn.allocations(), coturn.log()[-3000:]
            assert problems == []
        finally:
            await browser.close()
