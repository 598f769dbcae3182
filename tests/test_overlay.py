"""The overlay on the `/live` namespace against the real app: host controls, snapshot, live stock coalesced
to the true value, private checkout events, chat with moderation, reactions and viewer count. Socket.IO
clients on the WebSocket transport; commerce driven through its own services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accounts.service import get_user
from accounts.tokens import issue_guest_token
from commerce import inventory, lineup, orders
from commerce.payments import TestProvider
from config import Secrets, Settings, apply_overrides
from config.reload import ReloadResult
from rooms.live import go_live
from rooms.service import get_room
from store import Database, clock
from tests.api_client import SECRET, Client
from tests.commerce_helpers import product, users
from tests.test_live_room import Live, _account, _connected
from web.app import build_app
from web.middleware import CONFIG
from web.runtime import RUNTIME

pytestmark = pytest.mark.timeout(120)
ADDRESS = {"name": "Vic", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "overlay.stock_updates_per_second": 4.0, "overlay.presence_interval_ms": 200,
        "overlay.reaction_window_ms": 200, "chat.messages_per_10s": 3})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as client:
        yield client


def _db(edge: Client) -> Database:
    return edge.server.app[RUNTIME].db


async def _show(edge: Client, room: str, host_id: int, products: int = 4) -> tuple[int, list[int]]:
    """Take `room` live with `products` products of 10 units in its lineup; returns the show id and them."""
    db = _db(edge)
    async with db.read() as session:
        host = await get_user(session, host_id)
    made = [await product(db, host, stock=10, title=f"Item {n}", price_minor=2500 + n) for n in range(products)]
    async with db.write() as session:
        show = await go_live(session, await get_room(session, room))
        for item in made:
            await lineup.add(session, host, show.id, item.id)
    return show.id, [item.id for item in made]


PRIVATE = ("checkout.", "sales.ticker", "banned")


def _seqs(live: Live) -> list[int]:
    """The seq of every room event received (private events have their own sequence)."""
    return [data["seq"] for name, data in live.room_events() if not name.startswith(PRIVATE)]


async def test_host_controls_snapshot_stock_and_checkout(edge: Client) -> None:
    ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    vic_id, vic = await _account(edge, "vic@example.com", role="viewer")
    show_id, (p1, p2, p3, p4) = await _show(edge, "ann", ann_id)
    host, viewer = await _connected(edge, ann), await _connected(edge, vic)
    await host.ok("join", {"room": "ann"})
    first = (await viewer.ok("join", {"room": "ann"}))["snapshot"]
    assert first["live"] is True and first["pinned"] == [] and first["sale"] is None and first["max_pinned"] == 3

    assert (await viewer.error("pin", {"room": "ann", "product_id": p1}))["code"] == "not_room_publisher"
    assert (await host.error("pin", {"room": "ann", "product_id": 999}))["code"] == "not_in_lineup"
    for item in (p1, p2, p3):
        await host.ok("pin", {"room": "ann", "product_id": item})
    error = await host.error("pin", {"room": "ann", "product_id": p4})
    assert error["code"] == "pin_limit" and error["field"] == "product_id"
    pins = await viewer.wait_for("pins.changed", lambda d: len(d["pinned"]) == 3)
    card = pins["pinned"][0]
    assert card["product_id"] == p1 and card["price_minor"] == 2500 and card["available"] == 10
    assert card["state"] == "in_stock" and card["currency"] == "USD"
    assert (await host.ok("reorder_pins", {"room": "ann", "product_ids": [p3, p1, p2]}))["pinned"] == [p3, p1, p2]
    assert (await host.error("reorder_pins", {"room": "ann", "product_ids": [p1]}))["code"] == "pins_mismatch"
    assert (await host.ok("unpin", {"room": "ann", "product_id": p2}))["pinned"] == [p3, p1]

    before = clock.now_ms()
    sale = (await host.ok("start_sale", {"room": "ann", "product_id": p1, "price_minor": 999,
                                         "duration_seconds": 60, "quantity": 10}))["sale"]
    assert before <= sale["starts_at"] and sale["ends_at"] == sale["starts_at"] + 60_000
    started = await viewer.wait_for("sale.started")
    assert started["sale"]["ends_at"] == sale["ends_at"] and started["sale"]["price_minor"] == 999
    await viewer.wait_for("pins.changed", lambda d: any(c["price_minor"] == 999 for c in d["pinned"]))
    assert (await host.error("start_sale", {"room": "ann", "product_id": p3, "price_minor": 1,
                                            "duration_seconds": 5}))["code"] == "sale_running"

    # A burst of reserves: coalesced stock updates, the last one on the true value; sold out at the end.
    db = _db(edge)
    buyers = await users(db, 10)
    async with db.read() as session:
        vic_user = await get_user(session, vic_id)
    async with db.write() as session:
        hold = await inventory.reserve(session, vic_user, p1, hold_seconds=120, show_id=show_id)
    created = await viewer.wait_for("checkout.hold_created")
    assert created["hold_id"] == hold.id and created["expires_at"] == hold.expires_at and created["seq"] == 1
    started_at = asyncio.get_running_loop().time()
    for buyer in buyers[:9]:
        async with db.write() as session:
            await inventory.reserve(session, buyer, p1, hold_seconds=120, show_id=show_id)
    last = await viewer.wait_for("stock.changed", lambda d: d["product_id"] == p1 and d["available"] == 0)
    assert last["state"] == "sold_out"
    elapsed = asyncio.get_running_loop().time() - started_at
    await asyncio.sleep(0.6)
    updates = [d for name, d in viewer.events if name == "stock.changed" and d["product_id"] == p1]
    assert updates[-1]["available"] == 0 and len(updates) <= 10
    assert len(updates) <= 2 + 4 * (elapsed + 0.6), (len(updates), elapsed)
    assert not any(name.startswith("checkout.") for name, _d in host.events)

    # Paying: the buyer hears it privately, the host gets the sales ticker.
    async with db.write() as session:
        order = await orders.checkout(session, vic_user, orders.address_from(ADDRESS), show_id=show_id,
                                      hold_ids=None, tax_rate_basis_points=0, default_currency="USD")
    declined = orders.pay(db, TestProvider("secret"), vic_user, order.id, "4000000000000002")
    with pytest.raises(Exception, match="declined"):
        await declined
    assert (await viewer.wait_for("checkout.declined"))["code"] == "card_declined"
    await orders.pay(db, TestProvider("secret"), vic_user, order.id, "4242424242424242")
    paid = await viewer.wait_for("checkout.paid")
    assert paid["order_id"] == order.id and paid["status"] == "paid"
    ticker = await host.wait_for("sales.ticker")
    assert ticker["order_id"] == order.id and ticker["total_minor"] == paid["total_minor"]
    private = [d["seq"] for name, d in viewer.events if name.startswith("checkout.")]
    assert private == list(range(1, len(private) + 1))

    # Every room event in order without gaps; a new snapshot from the database has it all.
    seqs = _seqs(viewer)
    assert seqs == list(range(first["seq"] + 1, first["seq"] + 1 + len(seqs)))
    late = await _connected(edge)
    snapshot = (await late.ok("join", {"room": "ann"}))["snapshot"]
    assert [c["product_id"] for c in snapshot["pinned"]] == [p3, p1]
    assert snapshot["pinned"][1]["available"] == 0 and snapshot["pinned"][1]["state"] == "sold_out"
    assert snapshot["sale"]["ends_at"] == sale["ends_at"] and snapshot["seq"] >= seqs[-1]
    await asyncio.sleep(0.5)
    assert (await late.ok("join", {"room": "ann"}))["snapshot"]["viewers"] == 3

    await host.ok("stop_sale", {"room": "ann"})
    assert (await viewer.wait_for("sale.ended"))["product_id"] == p1
    ended = await host.ok("end_show", {"room": "ann"})
    assert (await viewer.wait_for("show.ended"))["show_id"] == ended["show_id"] == show_id
    assert (await host.error("pin", {"room": "ann", "product_id": p1}))["code"] == "not_live"
    for live in (host, viewer, late):
        await live.close()


def _reload(edge: Client, **chat: Any) -> None:
    holder = edge.server.app[CONFIG]
    current = holder.current
    holder.replace(current.model_copy(update={"chat": current.chat.model_copy(update=chat)}),
                   ReloadResult(applied=[f"chat.{key}" for key in chat], needs_restart=[]))


async def test_chat_rules_moderation_reactions_and_viewers(edge: Client) -> None:
    ann_id, ann = await _account(edge, "ann@example.com", room="ann")
    _vic_id, vic = await _account(edge, "vic@example.com", role="viewer")
    await _show(edge, "ann", ann_id, products=1)
    host, viewer = await _connected(edge, ann), await _connected(edge, vic)
    guest = await _connected(edge, issue_guest_token("Gus", SECRET, 1))
    anonymous = await _connected(edge)
    for live in (host, viewer, guest, anonymous):
        await live.ok("join", {"room": "ann"})

    text = "<b>hi</b> & <script>alert(1)</script>"
    message = (await viewer.ok("chat", {"room": "ann", "text": f"  {text} "}))["message"]
    assert message["text"] == text and message["name"] == "vic"
    got = await host.wait_for("chat.message")
    assert got["text"] == text and got["id"] == message["id"]
    assert (await guest.ok("chat", {"room": "ann", "text": "hello from a guest"}))["message"]["name"] == "Gus"
    assert (await anonymous.error("chat", {"room": "ann", "text": "x"}))["code"] == "sign_in_required"
    assert (await viewer.error("chat", {"room": "ann", "text": "x" * 501}))["code"] == "message_too_long"
    assert (await viewer.error("chat", {"room": "ann", "text": "   "}))["code"] == "empty_message"
    assert (await viewer.error("chat", {"room": "ann", "text": "a\u0007b"}))["code"] == "invalid_characters"
    await viewer.ok("chat", {"room": "ann", "text": "two"})
    await viewer.ok("chat", {"room": "ann", "text": "three"})
    assert (await viewer.error("chat", {"room": "ann", "text": "four"}))["code"] == "rate_limited"

    _reload(edge, banned_words=["darn"], links="block")
    assert (await guest.error("chat", {"room": "ann", "text": "Darn it"}))["code"] == "banned_word"
    assert (await guest.ok("chat", {"room": "ann", "text": "darned fine"}))["message"]["text"] == "darned fine"
    assert (await guest.error("chat", {"room": "ann", "text": "see shop.example.com/x"}))["code"] \
        == "links_not_allowed"
    await host.ok("chat", {"room": "ann", "text": "see https://ann.example/shop"})
    _reload(edge, banned_words=[], links="allow")

    assert (await viewer.error("set_slow_mode", {"room": "ann", "seconds": 5}))["code"] == "not_room_publisher"
    await host.ok("set_slow_mode", {"room": "ann", "seconds": 30})
    assert (await guest.error("chat", {"room": "ann", "text": "again"}))["code"] == "slow_mode"
    await host.ok("set_slow_mode", {"room": "ann", "seconds": 0})

    assert (await viewer.error("delete_message", {"room": "ann", "message_id": message["id"]}))["code"] \
        == "not_moderator"
    await host.ok("delete_message", {"room": "ann", "message_id": message["id"]})
    assert (await viewer.wait_for("chat.deleted"))["message_id"] == message["id"]
    snapshot = (await anonymous.ok("join", {"room": "ann"}))["snapshot"]
    assert message["id"] not in [m["id"] for m in snapshot["chat"]] and len(snapshot["chat"]) >= 4

    gus = (await guest.wait_for("chat.message", lambda d: d["name"] == "Gus"))["author"]
    until = (await host.ok("mute", {"room": "ann", "author": gus, "seconds": 60}))["until"]
    assert until > clock.now_ms()
    assert (await guest.error("chat", {"room": "ann", "text": "muted?"}))["code"] == "muted"
    await host.ok("ban", {"room": "ann", "author": gus})
    assert (await guest.wait_for("banned"))["room"] == "ann"
    assert (await guest.error("join", {"room": "ann"}))["code"] == "banned"
    assert (await guest.error("chat", {"room": "ann", "text": "still here?"}))["code"] == "not_joined"

    for _ in range(30):
        await viewer.ok("react", {"room": "ann", "kind": "heart"})
    for _ in range(5):
        await anonymous.ok("react", {"room": "ann", "kind": "fire"})
    assert (await viewer.error("react", {"room": "ann", "kind": "<3"}))["code"] == "invalid_reaction"
    await asyncio.sleep(0.8)
    windows = [d["counts"] for name, d in host.events if name == "reactions"]
    assert 1 <= len(windows) <= 4
    assert sum(w.get("heart", 0) for w in windows) == 20 and sum(w.get("fire", 0) for w in windows) == 5

    counts = [d["count"] for name, d in host.events if name == "viewers.changed"]
    assert counts and counts[-1] == 3  # the banned guest left
    await anonymous.close()
    await host.wait_for("viewers.changed", lambda d: d["count"] == 2)
    seqs = _seqs(host)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for live in (host, viewer, guest):
        await live.close()
