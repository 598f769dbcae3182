"""ICE servers for clients: TURN REST credentials as coturn checks them, their expiry, the TURN settings and
secret, /api/ice-servers for our pages, and RFC 9725 Link headers on WHIP and WHEP answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection

from accounts import create_user
from accounts.stream_keys import rotate_stream_key
from config import ConfigError, Secrets, Settings, apply_overrides, load_secrets, parse_settings
from config.schema import IceSettings, MediaSettings, TurnSettings
from media.codecs import VP8
from signaling.ice_servers import IceServer, IceServers, ice_servers, turn_credential
from signaling.sdp_http import ice_server_links
from tests.api_client import PASSWORD, SECRET, Client, login
from tests.media_peers import CounterTrack, answer, new_viewer, offer, veth_address
from web.app import build_app
from web.middleware import CONFIG
from web.runtime import RUNTIME

pytestmark = pytest.mark.timeout(120)
TURN_SECRET = "turn-shared-secret-for-tests"
STUN_URL = "stun:stun.example.test:3478"
TURN_URLS = ["turn:turn.example.test:3478?transport=udp", "turns:turn.example.test:5349?transport=tcp"]
# name="quoted value" pairs of one Link header value.
LINK_PARAMETER = re.compile(r';\s*([a-z-]+)="((?:[^"\\]|\\.)*)"')


def _expected_password(username: str, secret: str = TURN_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_credential_is_the_turn_rest_scheme_coturn_checks() -> None:
    minted = turn_credential("north-wind", "viewer-7", 3600, now=1_767_268_800.9)
    # Computed independently: printf '1767272400:viewer-7' | openssl dgst -sha1 -hmac north-wind -binary | base64
    assert minted.username == "1767272400:viewer-7"
    assert minted.credential == "pxq4xzZn196ZjQNnzsirMjdLn+w="
    assert minted.expires_at == 1_767_272_400


def test_credential_expiry_follows_the_clock_and_ttl() -> None:
    before = int(time.time())
    minted = turn_credential(TURN_SECRET, "s1", 120)
    assert before + 120 <= minted.expires_at <= int(time.time()) + 120
    assert minted.username.split(":", 1)[0] == str(minted.expires_at)
    later = turn_credential(TURN_SECRET, "s1", 120, now=before + 60)
    assert later.expires_at == before + 180 and later.credential != minted.credential
    assert turn_credential("another secret", "s1", 120, now=before + 60).credential != later.credential


def test_credential_ids_stay_on_a_plain_alphabet() -> None:
    # coturn reads the expiry before the first ':'; an id with more separators or odd bytes stays unambiguous.
    assert turn_credential(TURN_SECRET, "guest:a/b c", 60, now=0).username == "60:guest-a-b-c"
    assert turn_credential(TURN_SECRET, "", 60, now=0).username == "60:anonymous"
    assert len(turn_credential(TURN_SECRET, "x" * 500, 60, now=0).username) == len("60:") + 64


def _media(stun: list[str], turn: list[str], ttl: int = 600) -> MediaSettings:
    return MediaSettings(ice=IceSettings(stun_urls=stun), turn=TurnSettings(urls=turn, credential_ttl_seconds=ttl))


def test_ice_servers_hand_out_stun_and_fresh_turn_credentials() -> None:
    found = ice_servers(_media([STUN_URL], TURN_URLS), TURN_SECRET, "session-1", now=1000)
    assert found.servers[0] == IceServer((STUN_URL,))
    turn = found.servers[1]
    assert turn.urls == tuple(TURN_URLS) and turn.username == "1600:session-1"
    assert turn.credential == _expected_password("1600:session-1")
    assert found.expires_at == 1600
    other = ice_servers(_media([STUN_URL], TURN_URLS), TURN_SECRET, "session-2", now=1000).servers[1]
    assert other.credential != turn.credential, "each client gets its own credential"


def test_without_turn_or_its_secret_only_stun_is_handed_out() -> None:
    assert ice_servers(_media([STUN_URL], []), TURN_SECRET, "s", now=0) == IceServers((IceServer((STUN_URL,)),), None)
    # TURN URLs added by a reload while no secret was loaded: left out rather than sent without credentials.
    assert ice_servers(_media([], TURN_URLS), None, "s", now=0) == IceServers((), None)


def test_link_headers_follow_rfc_9725() -> None:
    servers = IceServers((IceServer((STUN_URL,)), IceServer(tuple(TURN_URLS), "1600:s1", 'a"b\\c=')), 1600)
    assert ice_server_links(servers) == [
        f'<{STUN_URL}>; rel="ice-server"',
        f'<{TURN_URLS[0]}>; rel="ice-server"; username="1600:s1"; credential="a\\"b\\\\c="; '
        'credential-type="password"',
        f'<{TURN_URLS[1]}>; rel="ice-server"; username="1600:s1"; credential="a\\"b\\\\c="; '
        'credential-type="password"',
    ]
    assert ice_server_links(IceServers((), None)) == []


def test_turn_settings_are_checked_and_the_secret_stays_out_of_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("media:\n  turn:\n    urls: [stun:x.test]\n", "f.yml")
    assert caught.value.problems[0].startswith("f.yml:3:5: media.turn.urls: 'stun:x.test' is not a turn: or turns:")
    with pytest.raises(ConfigError) as caught:
        parse_settings("media:\n  turn:\n    credential_ttl_seconds: 10\n", "f.yml")
    assert "media.turn.credential_ttl_seconds" in caught.value.problems[0]
    with pytest.raises(ConfigError) as caught:
        parse_settings("media:\n  turn:\n    secret: hunter2\n", "f.yml")
    assert "media.turn.secret: secrets must not be in YAML" in caught.value.problems[0]

    configured = parse_settings(f"media:\n  turn:\n    urls: ['{TURN_URLS[0]}']\n")
    with pytest.raises(ConfigError) as caught:
        load_secrets(configured, {})
    assert caught.value.problems == [
        "media.turn.urls: TURN needs the shared secret: set PINSTREAM_TURN_SECRET or media.turn.secret_file"]
    assert load_secrets(configured, {"PINSTREAM_TURN_SECRET": "from-env"}).turn_secret == "from-env"
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text("from-file\n")
    from_file = parse_settings(f"media:\n  turn:\n    urls: ['{TURN_URLS[0]}']\n    secret_file: {secret_file}\n")
    secrets = load_secrets(from_file, {})
    assert secrets.turn_secret == "from-file" and "from-file" in secrets.values()
    assert "from-file" not in repr(secrets)
    assert load_secrets(from_file, {"PINSTREAM_TURN_SECRET": "from-env"}).turn_secret == "from-env"
    missing = parse_settings(f"media:\n  turn:\n    secret_file: {tmp_path / 'nope'}\n")
    with pytest.raises(ConfigError) as caught:
        load_secrets(missing, {})
    assert caught.value.problems[0].startswith("media.turn.secret_file: cannot read")


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "media.ice.host_addresses": [veth_address()], "media.ice.stun_urls": [STUN_URL],
        "media.turn.urls": TURN_URLS[:1], "media.turn.credential_ttl_seconds": 900,
        "rooms.end_grace_seconds": 0, **overrides})


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Client]:
    """The whole app with its media worker, STUN and TURN configured and the TURN secret loaded."""
    app = build_app(_settings(tmp_path), Secrets(secret_key=SECRET, turn_secret=TURN_SECRET))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_api_hands_our_pages_fresh_credentials(tmp_path: Path) -> None:
    app = build_app(_settings(tmp_path), Secrets(secret_key=SECRET, turn_secret=TURN_SECRET))
    async with TestClient(TestServer(app)) as client:
        started = int(time.time())
        response = await client.get("/api/ice-servers")
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        stun, turn = body["iceServers"]
        assert stun == {"urls": [STUN_URL]}, "STUN entries carry no username or credential"
        assert turn["urls"] == TURN_URLS[:1]
        expiry, who = turn["username"].split(":", 1)
        assert started + 900 <= int(expiry) <= int(time.time()) + 900
        assert body["expires_at"] == int(expiry) * 1000
        assert who.startswith("anonymous-") and turn["credential"] == _expected_password(turn["username"])
        again = (await (await client.get("/api/ice-servers")).json())["iceServers"][1]
        assert again["username"] != turn["username"], "anonymous callers are told apart"

        async with app[RUNTIME].db.write() as session:
            user = await create_user(session, "vi@example.com", PASSWORD, "viewer")
        token = (await login(client, "vi@example.com"))["access_token"]
        signed_in = await (await client.get("/api/ice-servers",
                                            headers={"Authorization": f"Bearer {token}"})).json()
        assert signed_in["iceServers"][1]["username"].endswith(f":{user.id}")

        # urls and credential_ttl_seconds are live: a reload applies to the next request.
        app[CONFIG].current = apply_overrides(app[CONFIG].current, {"media.turn.urls": TURN_URLS,
                                                                    "media.turn.credential_ttl_seconds": 60})
        reloaded = await (await client.get("/api/ice-servers")).json()
        assert reloaded["iceServers"][1]["urls"] == TURN_URLS
        assert reloaded["expires_at"] <= (int(time.time()) + 60) * 1000

    app = build_app(_settings(tmp_path, **{"media.turn.urls": []}), Secrets(secret_key=SECRET))
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/api/ice-servers")).json() == {"iceServers": [{"urls": [STUN_URL]}],
                                                                       "expires_at": None}


def _links(headers: list[str]) -> list[tuple[str, dict[str, str]]]:
    parsed = []
    for value in headers:
        url = value[value.index("<") + 1:value.index(">")]
        parameters = {name: re.sub(r"\\(.)", r"\1", quoted) for name, quoted in LINK_PARAMETER.findall(value)}
        parsed.append((url, parameters))
    return parsed


def _assert_session_links(headers: list[str], session_id: str) -> None:
    started = int(time.time())
    (stun_url, stun), (turn_url, turn) = _links(headers)
    assert (stun_url, stun) == (STUN_URL, {"rel": "ice-server"})
    assert turn_url == TURN_URLS[0] and turn["rel"] == "ice-server" and turn["credential-type"] == "password"
    expiry, who = turn["username"].split(":", 1)
    assert who == session_id and started - 5 + 900 <= int(expiry) <= started + 900
    assert turn["credential"] == _expected_password(turn["username"])


async def test_whip_and_whep_answers_advertise_turn_with_session_credentials(edge: Client) -> None:
    async with edge.server.app[RUNTIME].db.write() as session:
        user = await create_user(session, "ann@example.com", PASSWORD, "host")
        key = await rotate_stream_key(session, user.id)
    publisher = RTCPeerConnection()
    publisher.addTransceiver(CounterTrack(), direction="sendonly").setCodecPreferences([VP8])
    viewer = new_viewer()
    try:
        response = await edge.post("/whip/ann", data=await offer(publisher), headers={
            "Content-Type": "application/sdp", "Authorization": f"Bearer {key}"})
        assert response.status == 201, await response.text()
        _assert_session_links(response.headers.getall("Link"), response.headers["Location"].rsplit("/", 1)[1])
        await answer(publisher, await response.text())

        watched = await edge.post("/whep/ann", data=await offer(viewer.pc),
                                  headers={"Content-Type": "application/sdp"})
        assert watched.status == 201, await watched.text()
        _assert_session_links(watched.headers.getall("Link"), watched.headers["Location"].rsplit("/", 1)[1])
    finally:
        await viewer.close()
        await publisher.close()
