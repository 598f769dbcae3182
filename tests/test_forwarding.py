"""The aiortc coupling module: it refuses an aiortc it was not written for, and adds what aiortc lacks."""

from __future__ import annotations

import re

import aiortc
import pytest

from config.schema import IceSettings, MediaSettings
from media import forwarding
from media.api import MediaEvent
from media.rooms import MediaService
from tests.media_peers import CounterTrack, offer, veth_address


def test_the_pinned_aiortc_is_installed_and_its_internals_are_where_we_expect() -> None:
    forwarding.check_aiortc()


def test_another_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(forwarding.AiortcMismatch, match="re-check its internals"):
        forwarding.check_aiortc()


def test_a_moved_internal_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aiortc.RTCRtpReceiver, "_send_rtcp_pli")
    with pytest.raises(forwarding.AiortcMismatch, match="_send_rtcp_pli"):
        forwarding.check_aiortc()


def test_public_address_replaces_host_candidates() -> None:
    sdp = ("a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
           "a=candidate:2 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n")
    rewritten = forwarding.announce_public_address(sdp, "203.0.113.7")
    assert "203.0.113.7 40000 typ host" in rewritten and "10.0.0.5 40000 typ host" not in rewritten
    assert "198.51.100.9 40000 typ srflx" in rewritten
    assert forwarding.announce_public_address(sdp, "") == sdp


async def test_answers_offer_only_configured_addresses_in_the_port_range() -> None:
    ice = IceSettings(host_addresses=[veth_address()], port_min=41000, port_max=41009,
                      public_address="203.0.113.7")
    events: list[MediaEvent] = []
    service = MediaService(MediaSettings(ice=ice), events.append)
    try:
        publisher = aiortc.RTCPeerConnection()
        publisher.addTransceiver(CounterTrack(), direction="sendonly")
        result = await service.open_publisher("shop", "p", await offer(publisher))
        candidates = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", result.sdp)
        assert candidates, result.sdp
        for address, port in candidates:
            assert address == "203.0.113.7"  # announced for the 1:1 NAT
            assert 41000 <= int(port) <= 41009
        await publisher.close()
    finally:
        await service.close()
