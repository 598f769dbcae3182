"""Orders on SQLite and PostgreSQL: carts with several lines, totals in minor units (combined shipping per show,
tax), the state machine with its audit trail, payments through the test provider (declines, webhooks,
late payments refunded), shipping, refunds, expiry and the buyer's history."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from accounts.errors import Conflict, DomainError, Forbidden, NotFound, Unauthorized
from accounts.user import User
from commerce import catalog, inventory, lineup, orders
from commerce.catalog import VariantSpec
from commerce.jobs import HANDLERS
from commerce.models import PaymentRow
from commerce.orders import ShippingAddress, tax_for
from commerce.payments import DECLINE_CARD, PaymentDeclined, TestProvider
from commerce.values import Hold, Order
from config.schema import JobsSettings
from store import Database, JobRunner, now_ms
from tests.commerce_helpers import live_show, product, users

pytestmark = pytest.mark.timeout(120)
ADDRESS = ShippingAddress(name="Ada Lovelace", line1="12 St James's Sq", city="London", postal_code="SW1Y 4JH",
                          country="gb")
PROVIDER = TestProvider("orders-test-secret")
CARD = "4242 4242 4242 4242"
HOLD_SECONDS = 300


async def hold(db: Database, buyer: User, product_id: int, *, quantity: int = 1, variant_id: int | None = None,
               show_id: int | None = None, now_ms: int | None = None) -> Hold:
    async with db.write() as session:
        return await inventory.reserve(session, buyer, product_id, hold_seconds=HOLD_SECONDS, quantity=quantity,
                                       variant_id=variant_id, show_id=show_id, now_ms=now_ms)


async def checkout(db: Database, buyer: User, show_id: int | None = None, *,
                   hold_ids: list[int] | None = None) -> Order:
    async with db.write() as session:
        return await orders.checkout(session, buyer, ADDRESS, show_id=show_id, hold_ids=hold_ids,
                                     tax_rate_basis_points=825, default_currency="USD")


async def stock(db: Database, product_id: int) -> tuple[int, int, int]:
    async with db.read() as session:
        variant = (await catalog.get_product(session, product_id)).variants[0]
    return variant.available, variant.held, variant.sold


def test_tax_rounds_half_up() -> None:
    assert tax_for(10_000, 825) == 825
    assert tax_for(1, 5000) == 1 and tax_for(1, 4999) == 0
    assert tax_for(2500, 0) == 0


async def test_cart_checkout_totals_and_combined_shipping(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    async with db.write() as session:
        await catalog.set_host_settings(session, host, 700, "USD")
    jacket = await product(db, host, stock=5, price_minor=2500)
    shirt = await product(db, host, title="Shirt", price_minor=1000,
                          variants=[VariantSpec("S", 2, {"size": "S"}), VariantSpec("M", 2, {"size": "M"})])
    _, show = await live_show(db, host)
    async with db.write() as session:
        await lineup.add(session, host, show.id, jacket.id, show_price_minor=2000)
        await lineup.add(session, host, show.id, shirt.id)
    await hold(db, buyer, jacket.id, quantity=2, show_id=show.id)
    await hold(db, buyer, shirt.id, variant_id=shirt.variants[1].id, show_id=show.id)
    await hold(db, buyer, jacket.id)  # outside the show: not in this cart
    order = await checkout(db, buyer, show.id)
    assert order.status == "reserved" and order.show_id == show.id and order.seller_id == host.id
    assert [(line.title, line.sku, line.quantity, line.unit_price_minor, line.total_minor) for line in order.lines] \
        == [("Denim jacket", "default", 2, 2000, 4000), ("Shirt", "M", 1, 1000, 1000)]
    assert (order.items_minor, order.shipping_minor, order.tax_minor) == (5000, 700, 413)
    assert order.total_minor == 6113 and order.currency == "USD"
    assert order.shipping_address["country"] == "GB" and order.expires_at is not None
    assert [(event.from_status, event.to_status, event.actor_id) for event in order.events] == [
        (None, "pending", buyer.id), ("pending", "reserved", buyer.id)]

    with pytest.raises(Conflict) as empty:
        await checkout(db, buyer, show.id)
    assert empty.value.code == "cart_empty"
    await hold(db, buyer, shirt.id, variant_id=shirt.variants[0].id, show_id=show.id)
    again = await checkout(db, buyer, show.id)
    assert again.shipping_minor == 0 and again.total_minor == 1000 + tax_for(1000, 825)
    outside = await checkout(db, buyer)
    assert outside.shipping_minor == 700 and outside.show_id is None


async def test_pay_ship_refund_and_the_audit_trail(db: Database) -> None:
    host, buyer, stranger = await users(db, 1, "host") + await users(db, 2)
    item = await product(db, host, stock=3, purchase_limit=2)
    first = await hold(db, buyer, item.id, quantity=2)
    order = await checkout(db, buyer, hold_ids=[first.id])
    assert await stock(db, item.id) == (1, 2, 0)

    with pytest.raises(PaymentDeclined) as declined:
        await orders.pay(db, PROVIDER, buyer, order.id, DECLINE_CARD)
    assert declined.value.code == "card_declined" and declined.value.http_status == 402
    async with db.read() as session:
        assert (await orders.get_order(session, order.id)).status == "reserved"
        assert [payment.status for payment in await orders.payments_of(session, order.id)] == [
            "requires_payment_method"]
    with pytest.raises(Forbidden):
        await orders.pay(db, PROVIDER, host, order.id, CARD)
    with pytest.raises(NotFound):
        await orders.pay(db, PROVIDER, stranger, order.id, CARD)
    paid = await orders.pay(db, PROVIDER, buyer, order.id, CARD)
    assert paid.status == "paid" and await stock(db, item.id) == (1, 0, 2)
    assert (await orders.pay(db, PROVIDER, buyer, order.id, CARD)).status == "paid"

    async with db.write() as session:
        with pytest.raises(Conflict) as illegal:
            await orders.cancel_order(session, buyer, order.id)
        assert illegal.value.code == "illegal_transition"
    async with db.write() as session:
        with pytest.raises(Forbidden):
            await orders.ship(session, buyer, order.id, "1Z999AA10123456784")
    async with db.write() as session:
        shipped = await orders.ship(session, host, order.id, " 1Z999AA10123456784 ", "UPS")
    assert shipped.status == "fulfilled" and shipped.tracking_number == "1Z999AA10123456784"
    assert shipped.carrier == "UPS"
    async with db.write() as session:
        with pytest.raises(Conflict):
            await orders.ship(session, host, order.id, "again")
    refunded = await orders.refund(db, PROVIDER, host, order.id, reason="arrived damaged")
    assert refunded.status == "refunded"
    assert await stock(db, item.id) == (1, 0, 0)  # shipped units do not come back on sale
    async with db.read() as session:
        payments = await orders.payments_of(session, order.id)
    assert payments[0].status == "refunded" and payments[0].refunded_minor == order.total_minor
    assert payments[0].refund_id is not None and payments[0].refund_id.startswith("re_test_")
    with pytest.raises(Conflict):
        await orders.refund(db, PROVIDER, host, order.id)
    assert [(event.from_status, event.to_status, event.actor_id, event.reason) for event in refunded.events] == [
        (None, "pending", buyer.id, "checkout"), ("pending", "reserved", buyer.id, "items held"),
        ("reserved", "paid", buyer.id, f"payment {payments[0].intent_id} succeeded"),
        ("paid", "fulfilled", host.id, "shipped: 1Z999AA10123456784"),
        ("fulfilled", "refunded", host.id, "arrived damaged")]
    # The refund gave the units back to the buyer's limit.
    assert isinstance(await hold(db, buyer, item.id), Hold)


async def test_refund_before_shipping_restocks(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=2)
    order = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id)).id])
    await orders.pay(db, PROVIDER, buyer, order.id, CARD)
    assert await stock(db, item.id) == (1, 0, 1)
    await orders.refund(db, PROVIDER, host, order.id)
    assert await stock(db, item.id) == (2, 0, 0)


async def test_cancel_releases_and_illegal_transitions_are_refused(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=2)
    order = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id, quantity=2)).id])
    async with db.write() as session:
        with pytest.raises(Conflict) as in_order:
            await inventory.cancel_hold(session, buyer, order.lines[0].hold_id)
        assert in_order.value.code == "hold_in_order"
    async with db.write() as session:
        with pytest.raises(Conflict) as illegal:
            await orders.ship(session, host, order.id, "1Z")
        assert illegal.value.code == "illegal_transition"
    async with db.write() as session:
        cancelled = await orders.cancel_order(session, host, order.id, reason="out of this size")
    assert cancelled.status == "cancelled" and cancelled.events[-1].actor_id == host.id
    assert await stock(db, item.id) == (2, 0, 0)
    for attempt in ("pay", "cancel", "refund"):
        with pytest.raises(Conflict) as refused:
            if attempt == "pay":
                await orders.pay(db, PROVIDER, buyer, order.id, CARD)
            elif attempt == "refund":
                await orders.refund(db, PROVIDER, host, order.id)
            else:
                async with db.write() as session:
                    await orders.cancel_order(session, buyer, order.id)
        assert refused.value.code == "illegal_transition"


async def test_lapsed_holds_expire_the_order_and_a_late_payment_is_refunded(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=2)
    soon = now_ms() - HOLD_SECONDS * 1000 + 1000
    first = await hold(db, buyer, item.id, now_ms=soon)
    second = await hold(db, buyer, item.id)
    order = await checkout(db, buyer, hold_ids=[first.id, second.id])
    assert order.expires_at == first.expires_at
    intent = await PROVIDER.create_intent(order.total_minor, order.currency, idempotency_key=f"order:{order.id}",
                                          metadata={})
    async with db.write() as session:
        session.add(PaymentRow(order_id=order.id, provider="test", intent_id=intent.id,
                               amount_minor=intent.amount_minor, currency="USD", status=intent.status,
                               refunded_minor=0, created_at=now_ms(), updated_at=now_ms()))
    await asyncio.sleep(1.1)
    async with db.write() as session:
        # A hold in an order never lapses alone (as after a checkout that raced its expiry job): the job
        # below expires the order as a whole.
        assert await inventory.expire_hold(session, first.id) is None
    assert await JobRunner(db, HANDLERS, JobsSettings()).run_once() >= 1
    async with db.read() as session:
        expired = await orders.get_order(session, order.id)
    assert expired.status == "expired" and expired.events[-1].actor_id is None
    assert expired.events[-1].reason == "holds expired"
    assert await stock(db, item.id) == (2, 0, 0)

    confirmed = await PROVIDER.confirm_intent(intent.id, CARD)
    body, signature = PROVIDER.webhook("payment_intent.succeeded", confirmed)
    with pytest.raises(Unauthorized):
        PROVIDER.parse_webhook(body, "forged")
    late = await orders.handle_event(db, PROVIDER, PROVIDER.parse_webhook(body, signature))
    assert late.status == "expired"
    async with db.read() as session:
        payment = (await orders.payments_of(session, order.id))[0]
    assert payment.status == "refunded" and payment.refunded_minor == order.total_minor
    # The delivery repeats (webhooks are at least once): nothing changes, nothing is refunded twice.
    await orders.handle_event(db, PROVIDER, PROVIDER.parse_webhook(body, signature))
    async with db.read() as session:
        assert (await orders.payments_of(session, order.id))[0] == payment


async def test_a_webhook_pays_and_parallel_payments_pay_once(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=4)
    order = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id, quantity=2)).id])
    results = await asyncio.gather(*(orders.pay(db, PROVIDER, buyer, order.id, CARD) for _ in range(8)),
                                   return_exceptions=True)
    assert all(isinstance(result, Order) and result.status == "paid" for result in results), results
    async with db.read() as session:
        paid = await orders.get_order(session, order.id)
        payments = await orders.payments_of(session, order.id)
    assert [event.to_status for event in paid.events].count("paid") == 1 and len(payments) == 1
    assert await stock(db, item.id) == (2, 0, 2)

    other = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id)).id])
    with pytest.raises(PaymentDeclined):
        await orders.pay(db, PROVIDER, buyer, other.id, DECLINE_CARD)
    async with db.read() as session:
        intent_id = (await orders.payments_of(session, other.id))[0].intent_id
    body, signature = PROVIDER.webhook("payment_intent.succeeded", await PROVIDER.confirm_intent(intent_id, CARD))
    assert (await orders.handle_event(db, PROVIDER, PROVIDER.parse_webhook(body, signature))).status == "paid"


async def test_history_visibility_and_address_checks(db: Database) -> None:
    host, buyer, stranger = await users(db, 1, "host") + await users(db, 2)
    item = await product(db, host, stock=5)
    first = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id)).id])
    second = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id)).id])
    async with db.read() as session:
        history = await orders.list_buyer_orders(session, buyer.id)
        assert [order.id for order in history] == [second.id, first.id]
        assert [order.id for order in await orders.list_seller_orders(session, host.id, status="reserved")] == [
            second.id, first.id]
        assert await orders.list_buyer_orders(session, stranger.id) == []
        with pytest.raises(NotFound):
            await orders.order_for(session, stranger, first.id)
        assert (await orders.order_for(session, host, first.id)).id == first.id
    await hold(db, buyer, item.id)
    for bad in (ShippingAddress(name="", line1="x", city="y", postal_code="1", country="US"),
                ShippingAddress(name="A", line1="x", city="y", postal_code="1", country="USA")):
        with pytest.raises(DomainError) as invalid:
            async with db.write() as session:
                await orders.checkout(session, buyer, bad, show_id=None, hold_ids=None, tax_rate_basis_points=0,
                                      default_currency="USD")
        assert invalid.value.code == "invalid_address"


async def test_payment_rows_are_unique_per_intent(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=1)
    order = await checkout(db, buyer, hold_ids=[(await hold(db, buyer, item.id)).id])
    await asyncio.gather(*(orders.pay(db, PROVIDER, buyer, order.id, DECLINE_CARD) for _ in range(5)),
                         return_exceptions=True)
    async with db.read() as session:
        assert len((await session.execute(select(PaymentRow).where(PaymentRow.order_id == order.id))).all()) == 1
