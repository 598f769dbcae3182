"""HLS and recordings end to end: an aiortc publisher goes live over WHIP into the real app with a real media
worker and packager process; ffprobe/ffmpeg read the live playlist, the recording and its VOD playlist over
HTTP, as a player would."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection, RTCRtpCodecCapability
from aiortc.mediastreams import AudioStreamTrack

from config import Secrets, Settings, apply_overrides
from media.codecs import H264_CONSTRAINED_BASELINE, VP8
from tests.api_client import SECRET, Client
from tests.media_peers import HEIGHT, WIDTH, CounterTrack, answer, offer, veth_address
from tests.test_whip_whep import _host, _whip
from web.app import build_app
from web.middleware import CONFIG

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "media.ice.host_addresses": [veth_address()], "rooms.end_grace_seconds": 4,
        "hls.segment_seconds": 1.0, "hls.directory": str(tmp_path / "hls"),
        "recordings.directory": str(tmp_path / "recordings")})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as client:
        yield client


def _publisher(codec: RTCRtpCodecCapability) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([codec])
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    return pc


async def _go_live(edge: Client, key: str, codec: RTCRtpCodecCapability) -> tuple[RTCPeerConnection, str]:
    publisher = _publisher(codec)
    response = await _whip(edge, "ann", key, await offer(publisher))
    assert response.status == 201, await response.text()
    await answer(publisher, await response.text())
    return publisher, response.headers["Location"]


async def _playlist(edge: Client, wanted: str, segments: int = 0, seconds: float = 40) -> str:
    """The live media playlist once it contains `wanted` and at least `segments` segments."""
    async with asyncio.timeout(seconds):
        while True:
            response = await edge.get("/hls/ann/media.m3u8")
            if response.status == 200:
                text = await response.text()
                if wanted in text and text.count("#EXTINF") >= segments:
                    return text
            await asyncio.sleep(0.2)


def _probe(url: str) -> list[dict[str, object]]:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                             "-of", "json", url], capture_output=True, text=True, timeout=30, check=True)
    streams: list[dict[str, object]] = json.loads(result.stdout)["streams"]
    return streams


def _decodes_cleanly(url: str, seconds: float | None = None) -> None:
    """Decode (the first `seconds` of) a file or playlist; any error fails."""
    start = ["-live_start_index", "0"] if seconds is not None else []
    limit = ["-t", str(seconds)] if seconds is not None else []
    result = subprocess.run(["ffmpeg", "-v", "error", "-xerror", *start, "-i", url, *limit, "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


async def test_h264_live_reconnect_end_and_recording(edge: Client) -> None:
    key = await _host(edge, "ann@example.com", "ann")
    assert (await edge.get("/hls/ann/index.m3u8")).status == 404
    publisher, location = await _go_live(edge, key, H264_CONSTRAINED_BASELINE)
    playlist = await _playlist(edge, "#EXTINF", segments=3)
    assert "#EXT-X-PROGRAM-DATE-TIME:" in playlist and "#EXT-X-MAP:URI=" in playlist
    base = str(edge.make_url("/hls/ann/"))
    index = await edge.get("/hls/ann/index.m3u8", headers={"Origin": "https://player.example"})
    assert index.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert index.headers["Cache-Control"] == "no-cache" and index.headers["Access-Control-Allow-Origin"] == "*"
    text = await index.text()
    assert f"RESOLUTION={WIDTH}x{HEIGHT}" in text and 'CODECS="avc1.42' in text and "mp4a.40.2" in text
    streams = await asyncio.to_thread(_probe, base + "index.m3u8")
    assert sorted(str(s["codec_name"]) for s in streams) == ["aac", "h264"]
    assert [(s["width"], s["height"]) for s in streams if s["codec_name"] == "h264"] == [(WIDTH, HEIGHT)]
    await asyncio.to_thread(_decodes_cleanly, base + "media.m3u8", 3)
    segment = playlist.strip().splitlines()[-1]
    fetched = await edge.get(f"/hls/ann/{segment}", headers={"Range": "bytes=0-99"})
    assert fetched.status == 206 and len(await fetched.read()) == 100
    assert "immutable" in fetched.headers["Cache-Control"]

    # The host's connection drops and comes back within the grace period: a discontinuity, not a break.
    assert (await edge.delete(location, headers={"Authorization": f"Bearer {key}"})).status == 200
    await publisher.close()
    publisher, location = await _go_live(edge, key, H264_CONSTRAINED_BASELINE)
    playlist = await _playlist(edge, "#EXT-X-DISCONTINUITY")
    after = playlist.split("#EXT-X-DISCONTINUITY", 1)[1]
    async with asyncio.timeout(30):
        while after.count("#EXTINF") < 2:
            await asyncio.sleep(0.3)
            after = (await _playlist(edge, "#EXT-X-DISCONTINUITY")).split("#EXT-X-DISCONTINUITY", 1)[1]
    assert "#EXT-X-MAP:URI=" in after
    await asyncio.to_thread(_decodes_cleanly, base + "media.m3u8", 3)

    # The show ends: EXT-X-ENDLIST, a playable recording and its VOD playlist.
    show = (await (await edge.get("/api/shows?status=live")).json())["shows"][0]
    assert (await edge.delete(location, headers={"Authorization": f"Bearer {key}"})).status == 200
    await publisher.close()
    assert "#EXT-X-ENDLIST" in await _playlist(edge, "#EXT-X-ENDLIST", seconds=30)
    recording = await (await edge.get(f"/api/shows/{show['id']}/recording")).json()
    assert recording["status"] == "ready" and recording["bytes"] > 10_000
    streams = await asyncio.to_thread(_probe, str(edge.make_url(recording["mp4"])))
    assert sorted(str(s["codec_name"]) for s in streams) == ["aac", "h264"]
    await asyncio.to_thread(_decodes_cleanly, str(edge.make_url(recording["mp4"])))
    vod = await (await edge.get(recording["playlist"])).text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and "#EXT-X-PROGRAM-DATE-TIME:" in vod and "#EXT-X-BYTERANGE:" in vod
    await asyncio.to_thread(_decodes_cleanly, str(edge.make_url(recording["playlist"])))
    poster = await edge.get(recording["poster"])
    assert poster.status == 200 and poster.headers["Content-Type"] == "image/jpeg"
    assert (await poster.read())[:2] == b"\xff\xd8"


async def test_vp8_is_transcoded_to_h264(edge: Client) -> None:
    key = await _host(edge, "ann@example.com", "ann")
    publisher, _location = await _go_live(edge, key, VP8)
    await _playlist(edge, "#EXTINF", segments=2)
    base = str(edge.make_url("/hls/ann/"))
    streams = await asyncio.to_thread(_probe, base + "index.m3u8")
    assert sorted(str(s["codec_name"]) for s in streams) == ["aac", "h264"]
    await asyncio.to_thread(_decodes_cleanly, base + "media.m3u8", 3)
    poster = await edge.get("/hls/ann/poster.jpg")
    assert poster.status == 200 and (await poster.read())[:2] == b"\xff\xd8"
    # The server stops mid-show: the live playlist ends and the recording is finalised, both playable.
    settings = edge.server.app[CONFIG].current
    show = (await (await edge.get("/api/shows?status=live")).json())["shows"][0]
    await edge.close()
    await publisher.close()
    assert (Path(settings.hls.directory) / "ann" / "media.m3u8").read_text().endswith("#EXT-X-ENDLIST\n")
    recording = Path(settings.recordings.directory) / "ann" / f"{show['id']}.mp4"
    streams = await asyncio.to_thread(_probe, str(recording))
    assert sorted(str(s["codec_name"]) for s in streams) == ["aac", "h264"]
    await asyncio.to_thread(_decodes_cleanly, str(recording))


async def test_bad_requests_get_clean_errors(edge: Client) -> None:
    cases = [("/hls/nobody-here/index.m3u8", 404, "not_live"), ("/hls/ann/..%2F..%2Fdb.sqlite", 400, "invalid_name"),
             ("/hls/ann/seg-1.ts", 400, "invalid_name"), ("/hls/A..B/index.m3u8", 400, "invalid_room"),
             ("/hls/ann/%2e%2e/x", 404, "not_found"),  # dot segments are resolved before routing
             ("/hls/ann/.media.m3u8.tmp", 400, "invalid_name"), ("/recordings/12/recording.mp4", 404, "show_not_found"),
             ("/recordings/x/recording.mp4", 400, "invalid_show"), ("/recordings/1/..%2Fdb", 400, "invalid_name"),
             ("/api/shows/12/recording", 404, "show_not_found")]
    for path, status, code in cases:
        response = await edge.get(path)
        assert response.status == status, path
        assert (await response.json())["error"]["code"] == code, path
