"""Inventory on SQLite and PostgreSQL: holds never oversell under any concurrency, purchase limits hold
for parallel requests of one buyer, holds expire through durable jobs (also across a restart), idempotent
retries never hold twice, and every stock change is announced."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from accounts.errors import Conflict, DomainError, NotFound
from accounts.user import User
from bus import MemoryBus, OutboxRelay
from commerce import idempotency, inventory, lineup
from commerce.catalog import VariantSpec
from commerce.jobs import HANDLERS
from commerce.models import HoldRow, PurchaseCounterRow, VariantRow
from commerce.values import Hold
from config.schema import DatabaseSettings, EventsSettings, JobsSettings
from store import Database, JobRunner, now_ms
from store.models import Job, OutboxEvent
from tests.commerce_helpers import live_show, product, users

pytestmark = pytest.mark.timeout(240)
HOLD_SECONDS = 300


async def reserve(db: Database, buyer: User, product_id: int, **options: Any) -> Hold:
    async with db.write() as session:
        return await inventory.reserve(session, buyer, product_id, hold_seconds=options.pop("hold_seconds",
                                                                                            HOLD_SECONDS),
                                       **options)


async def attempt(db: Database, buyer: User, product_id: int, **options: Any) -> Hold | str:
    """A reserve that answers the refusal's code instead of raising it."""
    try:
        return await reserve(db, buyer, product_id, **options)
    except DomainError as error:
        return error.code


async def counters(db: Database, product_id: int) -> tuple[int, int, int]:
    async with db.read() as session:
        row = (await session.execute(select(func.sum(VariantRow.available), func.sum(VariantRow.held),
                                            func.sum(VariantRow.sold))
                                     .where(VariantRow.product_id == product_id))).one()
    return int(row[0]), int(row[1]), int(row[2])


async def held_by_holds(db: Database, product_id: int, status: str = "active") -> int:
    async with db.read() as session:
        total = await session.scalar(select(func.coalesce(func.sum(HoldRow.quantity), 0))
                                     .where(HoldRow.product_id == product_id, HoldRow.status == status))
    return int(total or 0)


def runner(db: Database) -> JobRunner:
    return JobRunner(db, HANDLERS, JobsSettings(poll_interval_ms=10, batch=1000))


async def test_reserve_cancel_expire_and_events(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=3)
    hold = await reserve(db, buyer, item.id, quantity=2)
    assert hold.status == "active" and hold.unit_price.amount_minor == 2500 and hold.unit_price.currency == "USD"
    assert hold.expires_at == hold.created_at + HOLD_SECONDS * 1000
    assert await counters(db, item.id) == (1, 2, 0)
    assert await attempt(db, buyer, item.id, quantity=2) == "sold_out"
    async with db.write() as session:
        cancelled = await inventory.cancel_hold(session, buyer, hold.id)
    assert cancelled.status == "cancelled"
    assert await counters(db, item.id) == (3, 0, 0)
    async with db.write() as session:
        with pytest.raises(Conflict) as refused:
            await inventory.cancel_hold(session, buyer, hold.id)
        assert refused.value.code == "hold_not_active"
        with pytest.raises(NotFound):
            await inventory.cancel_hold(session, host, hold.id)
    async with db.read() as session:
        job = (await session.execute(select(Job).where(Job.key == inventory.expiry_key(hold.id)))).scalar_one()
    assert job.status == "cancelled"

    past = now_ms() - HOLD_SECONDS * 1000 - 1
    lapsed = await reserve(db, buyer, item.id, quantity=3, now_ms=past)
    assert await counters(db, item.id) == (0, 3, 0)
    assert await runner(db).run_once() == 1
    assert await counters(db, item.id) == (3, 0, 0)
    async with db.read() as session:
        assert (await inventory.get_hold(session, lapsed.id)).status == "expired"

    async with db.read() as session:
        events = (await session.execute(select(OutboxEvent).order_by(OutboxEvent.id))).scalars().all()
    assert [(event.topic, event.type, event.payload["available"]) for event in events] == [
        (f"product:{item.id}", "stock.changed", available) for available in (1, 3, 0, 3)]


async def test_stock_events_go_to_the_rooms_of_live_shows(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=5)
    _, show = await live_show(db, host)
    async with db.write() as session:
        await lineup.add(session, host, show.id, item.id, show_price_minor=1999)
    hold = await reserve(db, buyer, item.id, show_id=show.id)
    assert hold.unit_price.amount_minor == 1999 and hold.show_id == show.id
    bus = MemoryBus()
    seen = bus.subscribe("room:vintage-finds")
    await OutboxRelay(db, bus, EventsSettings()).relay_once()
    event = await asyncio.wait_for(anext(seen), 5)
    assert event.type == "show.live"
    event = await asyncio.wait_for(anext(seen), 5)
    assert event.type == "stock.changed" and event.payload["available"] == 4
    assert event.payload["product_id"] == item.id and event.payload["held"] == 1


async def test_refusals(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    draft = await product(db, host, status="draft")
    archived = await product(db, host, status="archived")
    sized = await product(db, host, variants=[inventory_spec("S", 1), inventory_spec("M", 1)])
    assert await attempt(db, buyer, draft.id) == "product_not_found"
    assert await attempt(db, buyer, archived.id) == "product_unavailable"
    assert await attempt(db, buyer, sized.id) == "variant_required"
    assert await attempt(db, buyer, sized.id, variant_id=999_999) == "variant_not_found"
    assert await attempt(db, buyer, sized.id, variant_id=sized.variants[1].id, quantity=0) == "invalid_quantity"
    assert await attempt(db, buyer, 999_999) == "product_not_found"
    _, show = await live_show(db, host)
    assert await attempt(db, buyer, sized.id, variant_id=sized.variants[0].id, show_id=show.id) == "not_in_lineup"
    hold = await reserve(db, buyer, sized.id, variant_id=sized.variants[1].id)
    assert hold.variant_id == sized.variants[1].id
    assert await counters(db, sized.id) == (1, 1, 0)


def inventory_spec(sku: str, stock: int) -> VariantSpec:
    return VariantSpec(sku=sku, stock=stock, options={"size": sku})


async def _nodes(db: Database, database_url: str, count: int) -> list[Database]:
    """Separate Database objects on one database: separate engines and pools, as separate nodes have."""
    return [db] + [Database(DatabaseSettings(url=database_url, pool_size=10)) for _ in range(count - 1)]


async def test_hundreds_of_parallel_reserves_sell_exactly_the_stock(db: Database, database_url: str) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 400)
    item = await product(db, host, stock=50, purchase_limit=2)
    nodes = await _nodes(db, database_url, 4)
    try:
        results = await asyncio.gather(*(attempt(nodes[index % len(nodes)], buyer, item.id,
                                                 quantity=1 + index % 2)
                                         for index, buyer in enumerate(buyers)))
    finally:
        for node in nodes[1:]:
            await node.close()
    holds = [result for result in results if isinstance(result, Hold)]
    refusals = Counter(result for result in results if isinstance(result, str))
    assert set(refusals) == {"sold_out"}
    assert sum(hold.quantity for hold in holds) == 50
    assert await counters(db, item.id) == (0, 50, 0)
    assert await held_by_holds(db, item.id) == 50
    async with db.read() as session:
        limit_rows = (await session.execute(select(PurchaseCounterRow.units)
                                            .where(PurchaseCounterRow.product_id == item.id))).scalars().all()
    assert sum(limit_rows) == 50 and max(limit_rows) <= 2


async def test_one_buyer_in_parallel_cannot_pass_the_limit(db: Database, database_url: str) -> None:
    host, = await users(db, 1, "host")
    greedy = await users(db, 5)
    item = await product(db, host, stock=100, purchase_limit=3)
    nodes = await _nodes(db, database_url, 3)
    try:
        results = await asyncio.gather(*(attempt(nodes[index % 3], buyer, item.id)
                                         for buyer in greedy for index in range(40)))
    finally:
        for node in nodes[1:]:
            await node.close()
    per_buyer = Counter(result.user_id for result in results if isinstance(result, Hold))
    assert per_buyer == {buyer.id: 3 for buyer in greedy}
    assert Counter(result for result in results if isinstance(result, str)) == {"limit_reached": 5 * 37}
    assert await counters(db, item.id) == (85, 15, 0)


async def test_per_show_limits_count_each_show(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=10, purchase_limit=1, limit_scope="show")
    _, first = await live_show(db, host, "first-room")
    _, second = await live_show(db, host, "second-room")
    async with db.write() as session:
        await lineup.add(session, host, first.id, item.id)
        await lineup.add(session, host, second.id, item.id)
    assert isinstance(await attempt(db, buyer, item.id, show_id=first.id), Hold)
    assert await attempt(db, buyer, item.id, show_id=first.id) == "limit_reached"
    assert isinstance(await attempt(db, buyer, item.id, show_id=second.id), Hold)
    assert isinstance(await attempt(db, buyer, item.id), Hold)
    assert await attempt(db, buyer, item.id) == "limit_reached"


async def test_cancel_frees_the_limit_and_races_with_expiry_release_once(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=2, purchase_limit=1)
    past = now_ms() - HOLD_SECONDS * 1000 - 1
    hold = await reserve(db, buyer, item.id, now_ms=past)
    assert await attempt(db, buyer, item.id) == "limit_reached"

    async def cancel() -> str:
        try:
            async with db.write() as session:
                await inventory.cancel_hold(session, buyer, hold.id)
        except Conflict as error:
            return error.code
        return "cancelled"

    outcome, ran = await asyncio.gather(cancel(), runner(db).run_once())
    assert (outcome, ran) in (("cancelled", 0), ("cancelled", 1), ("hold_not_active", 1))
    assert await counters(db, item.id) == (2, 0, 0)
    assert isinstance(await attempt(db, buyer, item.id), Hold)


async def test_expired_holds_come_back_after_a_restart(database_url: str, db: Database) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 30)
    item = await product(db, host, stock=20)
    soon = now_ms() - HOLD_SECONDS * 1000 + 1500
    results = await asyncio.gather(*(attempt(db, buyer, item.id, now_ms=soon) for buyer in buyers))
    assert sum(isinstance(result, Hold) for result in results) == 20
    await db.close()  # the node goes down with every hold pending

    await asyncio.sleep(1.6)
    restarted = Database(DatabaseSettings(url=database_url))
    try:
        assert await counters(restarted, item.id) == (0, 20, 0)
        assert await runner(restarted).run_once() == 20
        assert await counters(restarted, item.id) == (20, 0, 0)
        assert await held_by_holds(restarted, item.id, "expired") == 20
        assert await runner(restarted).run_once() == 0
    finally:
        await restarted.close()


async def test_started_runner_expires_holds_in_the_background(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=1)
    await reserve(db, buyer, item.id, now_ms=now_ms() - HOLD_SECONDS * 1000 + 300)
    jobs = runner(db)
    jobs.start()
    try:
        for _ in range(200):
            if await counters(db, item.id) == (1, 0, 0):
                break
            await asyncio.sleep(0.02)
    finally:
        await jobs.stop()
    assert await counters(db, item.id) == (1, 0, 0)


async def test_parallel_retries_with_one_key_hold_once(db: Database, database_url: str) -> None:
    host, buyer, other = await users(db, 1, "host") + await users(db, 2)
    item = await product(db, host, stock=10)
    nodes = await _nodes(db, database_url, 3)
    request = idempotency.fingerprint("reserve", {"product_id": item.id, "quantity": 1})

    def action(product_id: int) -> idempotency.Action:
        async def run(session: Any) -> tuple[int, dict[str, Any]]:
            hold = await inventory.reserve(session, buyer, product_id, hold_seconds=HOLD_SECONDS)
            return 201, {"hold_id": hold.id}
        return run

    try:
        outcomes = await asyncio.gather(*(idempotency.run(nodes[index % 3], buyer.id, "tap-1", "reserve", request,
                                                          action(item.id)) for index in range(30)))
    finally:
        for node in nodes[1:]:
            await node.close()
    assert len({(outcome.status, outcome.body["hold_id"]) for outcome in outcomes}) == 1
    assert sum(not outcome.replayed for outcome in outcomes) == 1
    assert await counters(db, item.id) == (9, 1, 0)

    other_request = idempotency.fingerprint("reserve", {"product_id": item.id, "quantity": 2})
    with pytest.raises(Conflict) as mismatch:
        await idempotency.run(db, buyer.id, "tap-1", "reserve", other_request, action(item.id))
    assert mismatch.value.code == "idempotency_mismatch"
    # Keys are per user: another buyer's "tap-1" is another request.
    async def other_action(session: Any) -> tuple[int, dict[str, Any]]:
        hold = await inventory.reserve(session, other, item.id, hold_seconds=HOLD_SECONDS)
        return 201, {"hold_id": hold.id}

    assert not (await idempotency.run(db, other.id, "tap-1", "reserve", request, other_action)).replayed
    assert await counters(db, item.id) == (8, 2, 0)


async def test_a_refusal_is_stored_and_replayed_without_side_effects(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=1)
    request = idempotency.fingerprint("reserve", {"product_id": item.id, "quantity": 2})

    async def action(session: Any) -> tuple[int, dict[str, Any]]:
        await inventory.reserve(session, buyer, item.id, quantity=2, hold_seconds=HOLD_SECONDS)
        return 201, {}

    first = await idempotency.run(db, buyer.id, "k", "reserve", request, action)
    assert first.status == 409 and first.body["error"]["code"] == "sold_out" and not first.replayed
    again = await idempotency.run(db, buyer.id, "k", "reserve", request, action)
    assert (again.status, again.body, again.replayed) == (409, first.body, True)
    assert await counters(db, item.id) == (1, 0, 0)


async def test_stored_keys_are_looked_up_in_batches_as_pairs(db: Database) -> None:
    """Concurrent lookups share one query, and a key stored by one user is not another user's key."""
    host, first, second = await users(db, 1, "host") + await users(db, 2)
    item = await product(db, host, stock=1)
    request = idempotency.fingerprint("reserve", {"product_id": item.id, "quantity": 1})

    async def action(session: Any) -> tuple[int, dict[str, Any]]:
        await inventory.reserve(session, first, item.id, hold_seconds=HOLD_SECONDS)
        return 201, {}

    await idempotency.run(db, first.id, "first-key", "reserve", request, action)
    asked = [(first.id, "first-key"), (second.id, "first-key"), (first.id, "other"), (second.id, "other")] * 20
    found = await asyncio.gather(*(idempotency.is_stored(db, user_id, key) for user_id, key in asked))
    assert found == [True, False, False, False] * 20


async def test_reserves_cancels_and_expiries_mixed_keep_the_books(db: Database, database_url: str) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 200)
    item = await product(db, host, stock=40)
    nodes = await _nodes(db, database_url, 3)
    rng = random.Random(7)
    lapsed = now_ms() - HOLD_SECONDS * 1000 - 1

    async def shopper(index: int, buyer: User) -> None:
        node = nodes[index % 3]
        for _ in range(3):
            result = await attempt(node, buyer, item.id, now_ms=lapsed if rng.random() < 0.3 else None)
            if isinstance(result, Hold) and rng.random() < 0.5:
                try:
                    async with node.write() as session:
                        await inventory.cancel_hold(session, buyer, result.id)
                except Conflict as lost:  # the expiry job got there first
                    assert lost.code == "hold_not_active"

    async def expirer() -> None:
        for _ in range(20):
            await runner(nodes[1]).run_once()
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(expirer(), *(shopper(index, buyer) for index, buyer in enumerate(buyers)))
        while await runner(db).run_once():
            pass
    finally:
        for node in nodes[1:]:
            await node.close()
    available, held, sold = await counters(db, item.id)
    assert available >= 0 and available + held + sold == 40
    assert held == await held_by_holds(db, item.id) and sold == 0
