"""Commerce through the REST API: products and lineups for hosts, reserving with Idempotency-Key, the 409
codes, the cart, checkout, payment (decline and success), the buyer's history, shipping, refunds, flash
sales with deadlines, the admission queue, and the payment webhook."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from accounts.service import find_user_by_email
from commerce import availability
from commerce.payments import DECLINE_CARD, SIGNATURE_HEADER, TestProvider
from config import apply_overrides
from rooms import service as rooms
from rooms.live import go_live
from store import now_ms
from tests.api_client import SECRET, Client, bearer, database, make_user
from web.middleware import CONFIG

ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH",
           "country": "GB"}


async def _json(response: Any, status: int) -> Any:
    assert response.status == status, (response.status, await response.text())
    return await response.json()


async def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    body = await _json(response, status)
    assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


async def _live_show(client: Client, host_email: str) -> int:
    async with database(client).write() as session:
        owner = await rooms.find_room(session, "vintage-finds")
        if owner is None:
            host = await find_user_by_email(session, host_email)
            assert host is not None
            owner = await rooms.create_room(session, host, "vintage-finds", "Vintage finds")
        return (await go_live(session, owner)).id


async def test_products_lineup_and_a_full_purchase(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    other_host = await bearer(client, "other@example.com", "host")
    buyer = await bearer(client, "buyer@example.com")

    product = await _json(await client.post("/api/products", headers=host, json={
        "title": "90s denim jacket", "price_minor": 4500, "stock": 3, "purchase_limit": 2, "limit_scope": "show"}),
        201)
    assert product["status"] == "draft" and product["currency"] == "USD" and product["available"] == 3
    assert [v["sku"] for v in product["variants"]] == ["default"]
    pid = product["id"]
    await _error(await client.get(f"/api/products/{pid}", headers=buyer), 404, "product_not_found")
    assert (await _json(await client.get(f"/api/products/{pid}", headers=host), 200))["id"] == pid
    await _error(await client.patch(f"/api/products/{pid}", headers=other_host, json={"status": "active"}), 403,
                 "not_product_owner")
    product = await _json(await client.patch(f"/api/products/{pid}", headers=host,
                                             json={"status": "active", "price_minor": 4000}), 200)
    assert product["price_minor"] == 4000 and product["purchase_limit"] == 2
    variant_id = product["variants"][0]["id"]
    stock = await _json(await client.post(f"/api/products/{pid}/variants/{variant_id}/stock", headers=host,
                                          json={"delta": 2}), 200)
    assert stock["available"] == 5
    await _error(await client.post(f"/api/products/{pid}/variants/{variant_id}/stock", headers=host,
                                   json={"delta": -9}), 409, "not_enough_free_stock")
    listed = await _json(await client.get("/api/products"), 200)
    assert [p["id"] for p in listed["products"]] == [pid]
    tee = await _json(await client.post("/api/products", headers=host, json={
        "title": "Band tee", "price_minor": 2000, "status": "active",
        "variants": [{"sku": "TEE-S", "stock": 1, "options": {"size": "S"}}]}), 201)
    tee = await _json(await client.post(f"/api/products/{tee['id']}/variants", headers=host,
                                        json={"sku": "TEE-M", "stock": 4, "options": {"size": "M"}}), 201)
    assert [(v["sku"], v["options"]) for v in tee["variants"]] == [("TEE-S", {"size": "S"}), ("TEE-M", {"size": "M"})]
    await _error(await client.post(f"/api/products/{tee['id']}/variants", headers=host, json={"sku": "TEE-M"}),
                 409, "duplicate_sku")
    assert len((await _json(await client.get("/api/me/products", headers=host), 200))["products"]) == 2

    show_id = await _live_show(client, "host@example.com")
    lineup = await _json(await client.post(f"/api/shows/{show_id}/lineup", headers=host,
                                           json={"product_id": pid, "show_price_minor": 3500}), 200)
    lineup = await _json(await client.post(f"/api/shows/{show_id}/lineup", headers=host,
                                           json={"product_id": tee["id"]}), 200)
    assert [(i["product"]["id"], i["price_minor"]) for i in lineup["items"]] == [(pid, 3500), (tee["id"], 2000)]
    await _error(await client.post(f"/api/shows/{show_id}/lineup", headers=other_host, json={"product_id": pid}),
                 403, "not_room_publisher")
    lineup = await _json(await client.put(f"/api/shows/{show_id}/lineup/order", headers=host,
                                          json={"product_ids": [tee["id"], pid]}), 200)
    assert [i["product"]["id"] for i in lineup["items"]] == [tee["id"], pid]
    assert (await _json(await client.get(f"/api/shows/{show_id}/lineup"), 200)) == lineup
    await _json(await client.put("/api/me/shipping", headers=host, json={"shipping_minor": 599, "currency": "USD"}),
                200)

    # Reserve with an Idempotency-Key: the retry gets the first answer and holds nothing more.
    tap = {**buyer, "Idempotency-Key": "tap-1"}
    response = await client.post(f"/api/products/{pid}/reserve", headers=tap, json={"show_id": show_id})
    hold = await _json(response, 201)
    assert hold["unit_price_minor"] == 3500 and hold["expires_at"] - hold["created_at"] == 300_000
    assert "Idempotent-Replayed" not in response.headers
    retry = await client.post(f"/api/products/{pid}/reserve", headers=tap, json={"show_id": show_id})
    assert await _json(retry, 201) == hold and retry.headers["Idempotent-Replayed"] == "true"
    await _error(await client.post(f"/api/products/{pid}/reserve", headers=tap, json={"show_id": show_id,
                                                                                     "quantity": 2}),
                 409, "idempotency_mismatch")
    await _json(await client.post(f"/api/products/{pid}/reserve", headers=buyer, json={"show_id": show_id}), 201)
    await _error(await client.post(f"/api/products/{pid}/reserve", headers=buyer, json={"show_id": show_id}), 409,
                 "limit_reached")
    await _error(await client.post(f"/api/products/{tee['id']}/reserve", headers=buyer, json={}), 422,
                 "variant_required")
    small = tee["variants"][0]["id"]
    await _json(await client.post(f"/api/products/{tee['id']}/reserve", headers=buyer,
                                  json={"variant_id": small, "show_id": show_id}), 201)
    rival = await bearer(client, "rival@example.com")
    await _error(await client.post(f"/api/products/{tee['id']}/reserve", headers=rival,
                                   json={"variant_id": small}), 409, "sold_out")

    cart = await _json(await client.get("/api/cart", headers=buyer, params={"show_id": show_id}), 200)
    assert len(cart["holds"]) == 3 and cart["items_minor"] == {"USD": 3500 * 2 + 2000}
    cancelled = await _json(await client.delete(f"/api/holds/{cart['holds'][1]['id']}", headers=buyer), 200)
    assert cancelled["status"] == "cancelled"
    await _error(await client.delete(f"/api/holds/{cart['holds'][1]['id']}", headers=buyer), 409, "hold_not_active")
    await _error(await client.delete(f"/api/holds/{cart['holds'][0]['id']}", headers=rival), 404, "hold_not_found")

    checkout_key = {**buyer, "Idempotency-Key": "checkout-1"}
    body = {"show_id": show_id, "shipping_address": ADDRESS}
    order = await _json(await client.post("/api/checkout", headers=checkout_key, json=body), 201)
    assert order["status"] == "reserved" and len(order["lines"]) == 2
    assert (order["items_minor"], order["shipping_minor"], order["tax_minor"]) == (5500, 599, 0)
    assert order["total_minor"] == 6099 and order["expires_at"] == hold["expires_at"]
    assert await _json(await client.post("/api/checkout", headers=checkout_key, json=body), 201) == order
    await _error(await client.post("/api/checkout", headers=buyer, json=body), 409, "cart_empty")

    oid = order["id"]
    declined = await _error(await client.post(f"/api/orders/{oid}/pay", headers=buyer,
                                              json={"payment_method": "4000 0000 0000 0002"}), 402, "card_declined")
    assert declined["field"] == "payment_method"
    paid = await _json(await client.post(f"/api/orders/{oid}/pay", headers=buyer,
                                         json={"payment_method": "4242 4242 4242 4242"}), 200)
    assert paid["status"] == "paid"
    await _error(await client.post(f"/api/orders/{oid}/cancel", headers=buyer, json={}), 409, "illegal_transition")
    history = await _json(await client.get("/api/orders", headers=buyer), 200)
    assert [o["id"] for o in history["orders"]] == [oid]
    await _error(await client.get(f"/api/orders/{oid}", headers=rival), 404, "order_not_found")
    to_ship = await _json(await client.get("/api/me/sales", headers=host, params={"status": "paid"}), 200)
    assert [o["id"] for o in to_ship["orders"]] == [oid]
    shipped = await _json(await client.post(f"/api/orders/{oid}/ship", headers=host,
                                            json={"tracking_number": "1Z999AA10123456784", "carrier": "UPS"}), 200)
    assert shipped["status"] == "fulfilled" and shipped["tracking_number"] == "1Z999AA10123456784"
    refunded = await _json(await client.post(f"/api/orders/{oid}/refund", headers=host,
                                             json={"reason": "lost in transit"}), 200)
    assert [e["to_status"] for e in refunded["events"]] == ["pending", "reserved", "paid", "fulfilled", "refunded"]
    assert refunded["events"][-1]["reason"] == "lost in transit"

    product = await _json(await client.get(f"/api/products/{pid}"), 200)
    assert (product["variants"][0]["available"], product["variants"][0]["sold"]) == (4, 0)  # shipped: not back


async def test_flash_sale_deadlines_and_the_queue(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    first = await bearer(client, "first@example.com")
    second = await bearer(client, "second@example.com")
    pid = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Sneakers", "price_minor": 15000, "stock": 1, "status": "active"}), 201))["id"]
    now = now_ms()
    sale = await _json(await client.put(f"/api/products/{pid}/sale", headers=host, json={
        "price_minor": 9900, "starts_at": now + 60_000, "ends_at": now + 120_000}), 200)
    assert sale["starts_at"] == now + 60_000 and abs(sale["server_time"] - now) < 60_000
    early = await _error(await client.post(f"/api/products/{pid}/reserve", headers=first, json={}), 409,
                         "sale_not_started")
    assert early["starts_at"] == now + 60_000 and early["server_time"] >= now
    product = await _json(await client.get(f"/api/products/{pid}"), 200)
    assert product["sale"]["price_minor"] == 9900 and product["sale"]["admission"] == "open"

    start = now_ms()
    await _json(await client.put(f"/api/products/{pid}/sale", headers=host, json={
        "price_minor": 9900, "starts_at": start, "ends_at": start + 400}), 200)
    await asyncio.sleep(0.5)
    ended = await _error(await client.post(f"/api/products/{pid}/reserve", headers=first, json={}), 409,
                         "sale_ended")
    assert ended["ends_at"] == start + 400
    assert (await client.delete(f"/api/products/{pid}/sale", headers=host)).status == 204

    hot = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Signed vinyl", "price_minor": 5000, "stock": 1, "status": "active"}), 201))["id"]
    start = now_ms()
    sale = await _json(await client.put(f"/api/products/{hot}/sale", headers=host, json={
        "price_minor": 4000, "starts_at": start, "ends_at": start + 600_000, "admission": "queue",
        "queue_factor": 1}), 200)
    refused = await _error(await client.post(f"/api/products/{hot}/reserve", headers=first, json={}), 409,
                           "queue_token_required")
    assert refused["position"] is None and refused["sale_id"] == sale["id"]
    ticket = await _json(await client.post(f"/api/flash-sales/{sale['id']}/queue", headers=first), 200)
    assert ticket["status"] == "admitted" and ticket["token_expires_at"] > ticket["server_time"]
    waiting = await _json(await client.post(f"/api/flash-sales/{sale['id']}/queue", headers=second), 200)
    assert (waiting["status"], waiting["position"], waiting["token"]) == ("waiting", 1, None)
    hold = await _json(await client.post(f"/api/products/{hot}/reserve", headers=first,
                                         json={"queue_token": ticket["token"]}), 201)
    assert hold["unit_price_minor"] == 4000
    await _json(await client.delete(f"/api/holds/{hold['id']}", headers=first), 200)
    turn = await _json(await client.get(f"/api/flash-sales/{sale['id']}/queue", headers=second), 200)
    assert turn["status"] == "admitted" and turn["token"]
    assert (await _json(await client.get(f"/api/flash-sales/{sale['id']}"), 200))["admission"] == "queue"

    lottery = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Rare print", "price_minor": 5000, "stock": 1, "status": "active"}), 201))["id"]
    await _json(await client.put(f"/api/products/{lottery}/sale", headers=host, json={
        "price_minor": 4000, "starts_at": now_ms() + 60_000, "ends_at": now_ms() + 120_000,
        "admission": "lottery"}), 200)
    lottery_sale = (await _json(await client.get(f"/api/products/{lottery}"), 200))["sale"]
    await _error(await client.post(f"/api/flash-sales/{lottery_sale['id']}/queue", headers=first), 409,
                 "sale_not_started")


async def test_the_payment_webhook_is_signed(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    buyer = await bearer(client, "buyer@example.com")
    pid = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Lamp", "price_minor": 3000, "stock": 1, "status": "active"}), 201))["id"]
    await _json(await client.post(f"/api/products/{pid}/reserve", headers=buyer, json={}), 201)
    order = await _json(await client.post("/api/checkout", headers=buyer, json={"shipping_address": ADDRESS}), 201)
    await _error(await client.post(f"/api/orders/{order['id']}/pay", headers=buyer,
                                   json={"payment_method": DECLINE_CARD}), 402, "card_declined")
    provider = TestProvider(SECRET)
    intent = await provider.create_intent(order["total_minor"], "USD", idempotency_key=f"order:{order['id']}:"
                                          f"{order['total_minor']}", metadata={})
    body, signature = provider.webhook("payment_intent.succeeded", await provider.confirm_intent(intent.id, "visa"))
    forged = await client.post("/api/payments/webhook/test", data=body, headers={SIGNATURE_HEADER: "nope"})
    await _error(forged, 401, "bad_signature")
    await _error(await client.post("/api/payments/webhook/stripe", data=body, headers={SIGNATURE_HEADER: signature}),
                 404, "unknown_provider")
    response = await client.post("/api/payments/webhook/test", data=body, headers={SIGNATURE_HEADER: signature})
    assert response.status == 204
    assert (await _json(await client.get(f"/api/orders/{order['id']}", headers=buyer), 200))["status"] == "paid"


async def test_disabled_and_foreign_ids_are_not_found(client: Client) -> None:
    buyer = await bearer(client, "buyer@example.com")
    await make_user(client, "host@example.com", "host")
    for path in ("/api/products/abc", "/api/products/99999999"):
        await _error(await client.get(path), 404, "product_not_found")
    await _error(await client.post("/api/products/77/reserve", headers=buyer, json={}), 404, "product_not_found")
    await _error(await client.get("/api/orders/5", headers=buyer), 404, "order_not_found")
    await _error(await client.get("/api/flash-sales/5/queue", headers=buyer), 404, "sale_not_found")
    await _error(await client.post("/api/products/1/reserve", headers={**buyer, "Idempotency-Key": "é"}, json={}),
                 422, "invalid_idempotency_key")


async def test_sold_out_refusals_skip_the_writer_but_never_a_stored_answer(client: Client,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    host = await bearer(client, "host@example.com", "host")
    first = await bearer(client, "first@example.com")
    second = await bearer(client, "second@example.com")
    pid = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Last one", "price_minor": 100, "stock": 1, "status": "active"}), 201))["id"]
    holder = client.server.app[CONFIG]  # this test taps faster than an account may (reserves_per_second)
    holder.current = apply_overrides(holder.current, {"rate_limits.reserves_per_second": 1000})
    keyed = {**first, "Idempotency-Key": "only-tap"}
    hold = await _json(await client.post(f"/api/products/{pid}/reserve", headers=keyed, json={}), 201)
    hints = availability.for_database(database(client))
    assert hints.free(pid, None) == 0

    writes = 0
    original = database(client).write

    def counting_write() -> Any:
        nonlocal writes
        writes += 1
        return original()

    monkeypatch.setattr(database(client), "write", counting_write)
    try:
        for _ in range(20):
            await _error(await client.post(f"/api/products/{pid}/reserve", json={},
                                           headers={**second, "Idempotency-Key": uuid.uuid4().hex}), 409, "sold_out")
        await _error(await client.post(f"/api/products/{pid}/reserve", headers=second, json={}), 409, "sold_out")
        assert writes == 0
        # The retry of the request that held gets its hold back, although the product is sold out now.
        replay = await client.post(f"/api/products/{pid}/reserve", headers=keyed, json={})
        assert await _json(replay, 201) == hold and replay.headers["Idempotent-Replayed"] == "true"
    finally:
        monkeypatch.undo()

    # A cancel updates the hint as it commits: the freed unit is there for the very next request.
    await _json(await client.delete(f"/api/holds/{hold['id']}", headers=first), 200)
    assert hints.free(pid, None) == 1
    await _json(await client.post(f"/api/products/{pid}/reserve", headers=second, json={}), 201)


async def test_reserve_is_rate_limited_per_account_not_per_address(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    bot = await bearer(client, "bot@example.com")
    neighbour = await bearer(client, "neighbour@example.com")  # same address (loopback) as the bot
    pid = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Hyped", "price_minor": 100, "stock": 0, "status": "active"}), 201))["id"]
    holder = client.server.app[CONFIG]
    holder.current = apply_overrides(holder.current, {"rate_limits.reserves_per_second": 3})
    for _ in range(3):
        await _error(await client.post(f"/api/products/{pid}/reserve", headers=bot, json={}), 409, "sold_out")
    limited = await client.post(f"/api/products/{pid}/reserve", headers=bot, json={})
    await _error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "1"
    for _ in range(3):
        await _error(await client.post(f"/api/products/{pid}/reserve", headers=neighbour, json={}), 409, "sold_out")
    await asyncio.sleep(1.05)
    await _error(await client.post(f"/api/products/{pid}/reserve", headers=bot, json={}), 409, "sold_out")


async def test_a_lottery_publishes_the_hash_of_its_seed_before_entries(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    pid = (await _json(await client.post("/api/products", headers=host, json={
        "title": "Drop", "price_minor": 100, "stock": 2, "status": "active"}), 201))["id"]
    starts = now_ms() + 60_000
    sale = await _json(await client.put(f"/api/products/{pid}/sale", headers=host, json={
        "price_minor": 90, "starts_at": starts, "ends_at": starts + 60_000, "admission": "lottery"}), 200)
    assert sale["seed"] is None and len(sale["seed_sha256"]) == 64
    shown = await _json(await client.get(f"/api/flash-sales/{sale['id']}"), 200)
    assert shown["seed"] is None and shown["seed_sha256"] == sale["seed_sha256"]
    changed = await _json(await client.put(f"/api/products/{pid}/sale", headers=host, json={
        "price_minor": 80, "starts_at": starts, "ends_at": starts + 60_000, "admission": "lottery"}), 200)
    assert changed["seed_sha256"] != sale["seed_sha256"]  # a changed sale commits to a new seed
    open_sale = await _json(await client.put(f"/api/products/{pid}/sale", headers=host, json={
        "price_minor": 80, "starts_at": starts, "ends_at": starts + 60_000}), 200)
    assert open_sale["seed"] is None and open_sale["seed_sha256"] is None
