"""Orders: checking out held items, the order state machine with its audit trail, paying, shipping, refunds.

    pending → reserved → paid → fulfilled          (checkout, payment, the host ships)
    pending | reserved → cancelled | expired       (the buyer or host cancels; the holds lapse)
    paid | fulfilled → refunded

Any other change is refused with Conflict("illegal_transition"). A transition locks the order row and is a
conditional UPDATE from the state it read, and writes an `order_events` row (from, to, actor, reason, time)
in the same transaction, so the trail is exactly the history. Totals are integer minor units of one
currency: items + shipping (the host's flat rate, charged once per buyer and show) + tax (basis points of the
items, rounded half up).

Payment talks to the provider between transactions, never inside one (on SQLite that would hold the
single writer during a network call): read the order, create or reuse its intent, confirm it, then apply the
result in a write transaction. The result applies once however often it arrives (the confirm answer and any
webhook), and a payment that succeeds for an order whose holds lapsed meanwhile is refunded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.models import UserRow
from accounts.user import User
from commerce import checkout_events, inventory
from commerce.catalog import host_settings
from commerce.models import (
    HoldRow,
    OrderEventRow,
    OrderLineRow,
    OrderRecord,
    OrderRow,
    PaymentRow,
    ProductRow,
    VariantRow,
)
from commerce.payments import PaymentDeclined, PaymentIntent, PaymentProvider, ProviderEvent
from commerce.values import Order, OrderEvent, OrderLine, OrderStatus, Payment
from store import clock
from store.database import Database
from store.statements import PerDialect, bound, bound_values, table_of

logger = logging.getLogger(__name__)

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"reserved", "cancelled", "expired"}),
    "reserved": frozenset({"paid", "cancelled", "expired"}),
    "paid": frozenset({"fulfilled", "refunded"}),
    "fulfilled": frozenset({"refunded"}),
    "cancelled": frozenset(),
    "expired": frozenset(),
    "refunded": frozenset(),
}
SHIPPING_COMBINES_WITH = ("reserved", "paid", "fulfilled")
LIST_MAX_LIMIT = 100
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class ShippingAddress:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    """ISO 3166-1 alpha-2, e.g. US."""
    line2: str = ""
    region: str = ""

    def validated(self) -> ShippingAddress:
        fields: dict[str, str] = {}
        for name, value in asdict(self).items():
            value = " ".join(str(value).split())
            required = name not in ("line2", "region")
            if (required and not value) or len(value) > 200 or not value.isprintable():
                raise Invalid("invalid_address", f"shipping address {name} must be "
                              f"{'1' if required else '0'}-200 printable characters", f"shipping_address.{name}")
            fields[name] = value
        fields["country"] = fields["country"].upper()
        if not _COUNTRY.match(fields["country"]):
            raise Invalid("invalid_address", "country must be a two-letter ISO code such as US",
                          "shipping_address.country")
        return ShippingAddress(**fields)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def tax_for(items_minor: int, rate_basis_points: int) -> int:
    """Tax on the items in minor units, rounded half up (825 basis points = 8.25%)."""
    return (items_minor * rate_basis_points + 5_000) // 10_000


_ORDERS, _LINES, _EVENTS = table_of(OrderRow), table_of(OrderLineRow), table_of(OrderEventRow)
_HOLDS, _PAYMENTS = table_of(HoldRow), table_of(PaymentRow)
_PRODUCTS, _VARIANTS, _USERS = table_of(ProductRow), table_of(VariantRow), table_of(UserRow)
_LINES_OF = select(_LINES).where(_LINES.c.order_id == bindparam("order")).order_by(_LINES.c.id)
_EVENTS_OF = select(_EVENTS).where(_EVENTS.c.order_id == bindparam("order")).order_by(_EVENTS.c.id)
_HELD_UNTIL = select(func.min(_HOLDS.c.expires_at)).where(_HOLDS.c.order_id == bindparam("order"),
                                                          _HOLDS.c.status == "active")
_ORDER = select(_ORDERS).where(_ORDERS.c.id == bindparam("order"))
_LOCKED_ORDER = _ORDER.with_for_update()
_EVENT_COLUMNS = ("order_id", "from_status", "to_status", "actor_id", "reason", "at")
_INSERT_EVENT = insert(_EVENTS).values(bound_values(_EVENTS, *_EVENT_COLUMNS))
_LINE_COLUMNS = ("order_id", "hold_id", "product_id", "variant_id", "title", "sku", "quantity", "unit_price_minor",
                 "total_minor")
_INSERT_LINE = insert(_LINES).values(bound_values(_LINES, *_LINE_COLUMNS))
_MOVE_ORDER = (update(_ORDERS).where(_ORDERS.c.id == bindparam("order"), _ORDERS.c.status == bindparam("from_status"))
               .values(status=bindparam("to_status"), updated_at=bindparam("now")).returning(*_ORDERS.c))
_ORDER_COLUMNS = ("buyer_id", "seller_id", "show_id", "status", "currency", "items_minor", "shipping_minor",
                  "tax_minor", "total_minor", "shipping_address", "tracking_number", "carrier", "created_at",
                  "updated_at")
_INSERT_ORDER = insert(_ORDERS).values(bound_values(_ORDERS, *_ORDER_COLUMNS)).returning(*_ORDERS.c)


async def _load(session: AsyncSession, row: OrderRecord) -> Order:
    order = {"order": row.id}
    lines = (await session.execute(_LINES_OF, order)).all()
    events = (await session.execute(_EVENTS_OF, order)).all()
    expires_at = None
    if row.status in ("pending", "reserved"):
        expires_at = await session.scalar(_HELD_UNTIL, order)
    return Order.from_row(row, tuple(OrderLine.from_row(line) for line in lines),
                          tuple(OrderEvent.from_row(event) for event in events),
                          None if expires_at is None else int(expires_at))


async def _row(session: AsyncSession, order_id: int, *, lock: bool = False) -> Row[Any]:
    row = (await session.execute(_LOCKED_ORDER if lock else _ORDER, {"order": order_id})).first()
    if row is None:
        raise NotFound("order_not_found", "no such order")
    return row


async def get_order(session: AsyncSession, order_id: int) -> Order:
    return await _load(session, await _row(session, order_id))


def _may_see(user: User, row: OrderRecord) -> bool:
    return user.is_admin or user.id in (row.buyer_id, row.seller_id)


def _is_seller(user: User, row: OrderRecord) -> bool:
    return not user.disabled and (user.is_admin or user.id == row.seller_id)


async def order_for(session: AsyncSession, user: User, order_id: int) -> Order:
    """An order its buyer, its seller or an admin may see; NotFound for anyone else."""
    row = await _row(session, order_id)
    if not _may_see(user, row):
        raise NotFound("order_not_found", "no such order")
    return await _load(session, row)


async def transition(session: AsyncSession, row: OrderRecord, to: OrderStatus, *, actor_id: int | None,
                     reason: str, now: int, **values: Any) -> Row[Any]:
    """Move a locked order to `to` if the state machine allows it from its current state, and audit it."""
    current = row.status
    if to not in TRANSITIONS[current]:
        raise Conflict("illegal_transition", f"an order that is {current} cannot become {to}")
    statement = _MOVE_ORDER if not values else _MOVE_ORDER.values(**values)
    moved = (await session.execute(statement, {"order": row.id, "from_status": current, "to_status": to,
                                               "now": now})).first()
    if moved is None:
        raise Conflict("illegal_transition", "the order changed meanwhile; reload it")
    await _audit(session, row.id, current, to, actor_id, reason, now)
    return moved


async def _audit(session: AsyncSession, order_id: int, from_status: str | None, to_status: str,
                 actor_id: int | None, reason: str, now: int) -> None:
    await session.execute(_INSERT_EVENT, bound({"order_id": order_id, "from_status": from_status,
                                                "to_status": to_status, "actor_id": actor_id,
                                                "reason": reason[:200], "at": now}))


_LOCK_BUYER = select(_USERS.c.id).where(_USERS.c.id == bindparam("buyer")).with_for_update(key_share=True)
"""One checkout per buyer at a time, so two parallel checkouts cannot both skip (or both charge) shipping.
NO KEY UPDATE: it must not block the KEY SHARE locks that the buyer's concurrent reserves take."""
_CART = (select(*_HOLDS.c, _PRODUCTS.c.owner_id, _PRODUCTS.c.title, _VARIANTS.c.sku)
         .join(_PRODUCTS, _PRODUCTS.c.id == _HOLDS.c.product_id).join(_VARIANTS, _VARIANTS.c.id == _HOLDS.c.variant_id)
         .where(_HOLDS.c.user_id == bindparam("buyer"), _HOLDS.c.status == "active", _HOLDS.c.order_id.is_(None))
         .order_by(_HOLDS.c.id))
_CART_HOLDS = _CART.where(_HOLDS.c.id.in_(bindparam("holds", expanding=True)))
_CART_OF_SHOW = _CART.where(_HOLDS.c.show_id == bindparam("show"))
_CART_OUTSIDE_SHOWS = _CART.where(_HOLDS.c.show_id.is_(None))
_ATTACH_HOLDS = (update(_HOLDS).where(_HOLDS.c.id.in_(bindparam("holds", expanding=True)), *(
    _HOLDS.c.status == "active", _HOLDS.c.order_id.is_(None), _HOLDS.c.expires_at > bindparam("now")))
    .values(order_id=bindparam("order")).returning(_HOLDS.c.id))
_EARLIER_SHIPPED = (select(_ORDERS.c.id).where(
    _ORDERS.c.buyer_id == bindparam("buyer"), _ORDERS.c.seller_id == bindparam("seller"),
    _ORDERS.c.show_id == bindparam("show"), _ORDERS.c.status.in_(SHIPPING_COMBINES_WITH),
    _ORDERS.c.shipping_minor > 0).limit(1))


async def checkout(session: AsyncSession, buyer: User, address: ShippingAddress, *, show_id: int | None,
                   hold_ids: list[int] | None, tax_rate_basis_points: int, default_currency: str,
                   now_ms: int | None = None) -> Order:
    """Turn the buyer's cart (their active holds of `show_id`, or just `hold_ids`) into a reserved order.

    The holds keep their deadlines: checking out does not extend them. Conflict "cart_empty" without
    holds, "hold_not_active" if one lapsed; Invalid "mixed_sellers" / "mixed_currencies" when the items
    cannot share one order.
    """
    if buyer.disabled:
        raise Forbidden("account_disabled", "the account is disabled")
    now = clock.now_ms() if now_ms is None else now_ms
    clean = address.validated()
    await session.execute(_LOCK_BUYER, {"buyer": buyer.id})
    if hold_ids is not None:
        found = (await session.execute(_CART_HOLDS, {"buyer": buyer.id, "holds": hold_ids})).all()
    elif show_id is not None:
        found = (await session.execute(_CART_OF_SHOW, {"buyer": buyer.id, "show": show_id})).all()
    else:
        found = (await session.execute(_CART_OUTSIDE_SHOWS, {"buyer": buyer.id})).all()
    if hold_ids is not None and len(found) != len(set(hold_ids)):
        raise Conflict("hold_not_active", "some of these holds are not yours, ended, or already ordered")
    if not found:
        raise Conflict("cart_empty", "there is nothing held to check out")
    sellers = {hold.owner_id for hold in found}
    currencies = {hold.currency for hold in found}
    shows = {hold.show_id for hold in found}
    if len(sellers) != 1:
        raise Invalid("mixed_sellers", "check out each seller's items separately", "hold_ids")
    if len(currencies) != 1:
        raise Invalid("mixed_currencies", "check out items in different currencies separately", "hold_ids")
    (seller_id,), (currency,) = sellers, currencies
    order_show = shows.pop() if len(shows) == 1 else None
    items = sum(hold.unit_price_minor * hold.quantity for hold in found)
    shipping = await _shipping(session, buyer.id, seller_id, order_show, currency, default_currency)
    tax = tax_for(items, tax_rate_basis_points)
    row = (await session.execute(_INSERT_ORDER, bound({
        "buyer_id": buyer.id, "seller_id": seller_id, "show_id": order_show, "status": "pending",
        "currency": currency, "items_minor": items, "shipping_minor": shipping, "tax_minor": tax,
        "total_minor": items + shipping + tax, "shipping_address": clean.as_dict(), "tracking_number": None,
        "carrier": None, "created_at": now, "updated_at": now}))).one()
    await _audit(session, row.id, None, "pending", buyer.id, "checkout", now)
    await session.execute(_INSERT_LINE, [bound({
        "order_id": row.id, "hold_id": hold.id, "product_id": hold.product_id, "variant_id": hold.variant_id,
        "title": hold.title, "sku": hold.sku, "quantity": hold.quantity, "unit_price_minor": hold.unit_price_minor,
        "total_minor": hold.unit_price_minor * hold.quantity}) for hold in found])
    attached = (await session.execute(_ATTACH_HOLDS, {"holds": [hold.id for hold in found], "now": now,
                                                      "order": row.id})).all()
    if len(attached) != len(found):
        raise Conflict("hold_not_active", "a hold lapsed during checkout; reserve again")
    row = await transition(session, row, "reserved", actor_id=buyer.id, reason="items held", now=now)
    logger.info("order reserved", extra={"order_id": row.id, "buyer_id": buyer.id, "total_minor": row.total_minor})
    return await _load(session, row)


async def _shipping(session: AsyncSession, buyer_id: int, seller_id: int, show_id: int | None, currency: str,
                    default_currency: str) -> int:
    """The seller's flat rate, unless the buyer already has a live order from them in this show."""
    if show_id is not None:
        earlier = await session.scalar(_EARLIER_SHIPPED, {"buyer": buyer_id, "seller": seller_id, "show": show_id})
        if earlier is not None:
            return 0
    settings = await host_settings(session, seller_id, default_currency)
    if settings.shipping.amount_minor and settings.shipping.currency != currency:
        raise Conflict("currency_mismatch", f"the seller ships in {settings.shipping.currency}, "
                       f"the items cost {currency}")
    return settings.shipping.amount_minor


async def cancel_order(session: AsyncSession, actor: User, order_id: int, *, reason: str = "cancelled",
                       now_ms: int | None = None) -> Order:
    """Cancel an unpaid order (its buyer, its seller or an admin) and put its holds' units back on sale."""
    now = clock.now_ms() if now_ms is None else now_ms
    row = await _row(session, order_id, lock=True)
    if not (actor.id == row.buyer_id or _is_seller(actor, row)):
        raise NotFound("order_not_found", "no such order")
    row = await transition(session, row, "cancelled", actor_id=actor.id, reason=reason, now=now)
    await inventory.release_order_holds(session, row.id, "cancelled", now_ms=now)
    return await _load(session, row)


async def expire_order(session: AsyncSession, order_id: int, *, now_ms: int | None = None) -> Order | None:
    """The holds of an unpaid order lapsed: the order expires and all its units go back on sale.
    None if the order moved on meanwhile (paid or cancelled)."""
    now = clock.now_ms() if now_ms is None else now_ms
    row = await _row(session, order_id, lock=True)
    if "expired" not in TRANSITIONS[row.status]:
        return None
    row = await transition(session, row, "expired", actor_id=None, reason="holds expired", now=now)
    await inventory.release_order_holds(session, row.id, "expired", now_ms=now)
    return await _load(session, row)


async def ship(session: AsyncSession, actor: User, order_id: int, tracking_number: str, carrier: str = "", *,
               now_ms: int | None = None) -> Order:
    """The seller (or an admin) marks a paid order shipped, with its tracking number: it is fulfilled."""
    now = clock.now_ms() if now_ms is None else now_ms
    row = await _row(session, order_id, lock=True)
    if not _may_see(actor, row):
        raise NotFound("order_not_found", "no such order")
    if not _is_seller(actor, row):
        raise Forbidden("not_seller", "only the seller or an admin ships an order")
    tracking = " ".join(tracking_number.split())
    if not 1 <= len(tracking) <= 100 or not tracking.isprintable():
        raise Invalid("invalid_tracking_number", "tracking number must be 1-100 printable characters",
                      "tracking_number")
    carrier = " ".join(carrier.split())[:50]
    row = await transition(session, row, "fulfilled", actor_id=actor.id, reason=f"shipped: {tracking}", now=now,
                           tracking_number=tracking, carrier=carrier or None)
    return await _load(session, row)


async def list_buyer_orders(session: AsyncSession, buyer_id: int, *, limit: int = 20, offset: int = 0) -> list[Order]:
    """The buyer's order history, newest first."""
    rows = (await session.execute(
        select(OrderRow).where(OrderRow.buyer_id == buyer_id).order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
        .limit(max(1, min(limit, LIST_MAX_LIMIT))).offset(max(0, offset))
        .execution_options(populate_existing=True))).scalars().all()
    return [await _load(session, row) for row in rows]


async def list_seller_orders(session: AsyncSession, seller_id: int, *, status: str | None = None, limit: int = 20,
                             offset: int = 0) -> list[Order]:
    """A seller's orders, newest first, optionally in one state (e.g. "paid": to ship)."""
    query = select(OrderRow).where(OrderRow.seller_id == seller_id)
    if status is not None:
        if status not in TRANSITIONS:
            raise Invalid("invalid_status", f"status must be one of {', '.join(TRANSITIONS)}", "status")
        query = query.where(OrderRow.status == status)
    rows = (await session.execute(query.order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
                                  .limit(max(1, min(limit, LIST_MAX_LIMIT))).offset(max(0, offset))
                                  .execution_options(populate_existing=True))).scalars().all()
    return [await _load(session, row) for row in rows]


async def payments_of(session: AsyncSession, order_id: int) -> list[Payment]:
    rows = (await session.execute(select(PaymentRow).where(PaymentRow.order_id == order_id)
                                  .order_by(PaymentRow.id).execution_options(populate_existing=True))).scalars()
    return [Payment.from_row(row) for row in rows]


@dataclass(frozen=True)
class Applied:
    """What applying a provider's answer did: the order now, and whether the money must go back."""

    order: Order
    refund_intent: str | None
    refund_minor: int


_PAYMENT_OF_INTENT = (select(_PAYMENTS.c.id, _PAYMENTS.c.order_id, _PAYMENTS.c.status)
                      .where(_PAYMENTS.c.intent_id == bindparam("intent")).with_for_update())
_RECORD_PAYMENT_STATUS = (update(_PAYMENTS).where(_PAYMENTS.c.id == bindparam("payment"))
                          .values(status=bindparam("to_status"), failure_code=bindparam("failure"),
                                  updated_at=bindparam("now")))
_ALL_HELD = select(
    select(func.count()).select_from(_LINES).where(_LINES.c.order_id == bindparam("order")).scalar_subquery(),
    select(func.count()).select_from(_HOLDS).where(_HOLDS.c.order_id == bindparam("order"),
                                                   _HOLDS.c.status == "active").scalar_subquery())
_RECORDED_INTENT = (select(_PAYMENTS.c.intent_id).where(
    _PAYMENTS.c.order_id == bindparam("order"), _PAYMENTS.c.provider == bindparam("provider"),
    _PAYMENTS.c.amount_minor == bindparam("amount")).order_by(_PAYMENTS.c.id.desc()).limit(1))
_PAYMENT_COLUMNS = ("order_id", "provider", "intent_id", "amount_minor", "currency", "status", "failure_code",
                    "refund_id", "refunded_minor", "created_at", "updated_at")
_RECORD_INTENT = PerDialect(lambda insert: insert(_PAYMENTS).values(bound_values(_PAYMENTS, *_PAYMENT_COLUMNS))
                            .on_conflict_do_nothing(index_elements=[_PAYMENTS.c.intent_id]))


async def apply_intent(session: AsyncSession, intent: PaymentIntent, *, actor_id: int | None,
                       now_ms: int | None = None) -> Applied:
    """Record an intent's status; on success a reserved order becomes paid (its holds convert to sold).

    Applying the same success twice changes nothing. A success for an order that expired or was cancelled
    meanwhile is answered with the refund the caller must make.
    """
    now = clock.now_ms() if now_ms is None else now_ms
    payment = (await session.execute(_PAYMENT_OF_INTENT, {"intent": intent.id})).first()
    if payment is None:
        raise NotFound("payment_not_found", "no payment of an order has this intent")
    row = await _row(session, payment.order_id, lock=True)
    already = payment.status in ("succeeded", "refunded")
    if not already:
        await session.execute(_RECORD_PAYMENT_STATUS, {"payment": payment.id, "to_status": intent.status,
                                                       "failure": intent.failure_code, "now": now})
    if intent.status != "succeeded" or already:
        current = await _load(session, row)
        if intent.failure_code is not None and not already:
            await checkout_events.order(session, checkout_events.PAYMENT_DECLINED, current,
                                        code=intent.failure_code)
        return Applied(current, None, 0)
    if row.status == "reserved" and await _all_held(session, row.id):
        await inventory.convert_order_holds(session, row.id, now_ms=now)
        row = await transition(session, row, "paid", actor_id=actor_id, reason=f"payment {intent.id} succeeded",
                               now=now)
        logger.info("order paid", extra={"order_id": row.id, "total_minor": row.total_minor})
        paid = await _load(session, row)
        await checkout_events.order(session, checkout_events.ORDER_PAID, paid)
        return Applied(paid, None, 0)
    if row.status == "reserved":
        row = await transition(session, row, "expired", actor_id=None, reason="a hold lapsed before payment",
                               now=now)
        await inventory.release_order_holds(session, row.id, "expired", now_ms=now)
    logger.warning("payment succeeded for an order no longer held; refunding",
                   extra={"order_id": row.id, "status": row.status})
    return Applied(await _load(session, row), intent.id, intent.amount_minor)


async def _all_held(session: AsyncSession, order_id: int) -> bool:
    """Every line of the order still has its active hold (so paying converts exactly what was ordered)."""
    lines, held = (await session.execute(_ALL_HELD, {"order": order_id})).one()
    return bool(lines) and lines == held


async def _recorded_intent(session: AsyncSession, provider: PaymentProvider, order: Order) -> str | None:
    """The intent already recorded for the order at its amount, if any."""
    existing = await session.scalar(_RECORDED_INTENT, {"order": order.id, "provider": provider.name,
                                                       "amount": order.total_minor})
    return None if existing is None else str(existing)


async def _intent_for(db: Database, provider: PaymentProvider, order: Order, recorded: str | None) -> str:
    """The order's intent: the one already `recorded`, else a new one (idempotent per order and amount)."""
    if recorded is not None:
        return recorded
    intent = await provider.create_intent(order.total_minor, order.currency,
                                          idempotency_key=f"order:{order.id}:{order.total_minor}",
                                          metadata={"order_id": str(order.id)})
    now = clock.now_ms()
    async with db.write() as session:
        await session.execute(_RECORD_INTENT.of(session), bound({
            "order_id": order.id, "provider": provider.name, "intent_id": intent.id,
            "amount_minor": intent.amount_minor, "currency": intent.currency, "status": intent.status,
            "failure_code": None, "refund_id": None, "refunded_minor": 0, "created_at": now, "updated_at": now}))
    return intent.id


async def pay(db: Database, provider: PaymentProvider, buyer: User, order_id: int, payment_method: str) -> Order:
    """Pay a reserved order with a payment method. Paying a paid order again returns it unchanged; a decline
    is PaymentDeclined (402) and leaves the order reserved for another try while its holds last."""
    async with db.read() as session:  # one read for the order and its intent: every trip counts in a sale
        order = await order_for(session, buyer, order_id)
        recorded = await _recorded_intent(session, provider, order)
    if order.buyer_id != buyer.id:
        raise Forbidden("not_buyer", "only the buyer pays an order")
    if order.status in ("paid", "fulfilled"):
        return order
    if order.status != "reserved":
        raise Conflict("illegal_transition", f"an order that is {order.status} cannot be paid")
    if not payment_method.strip() or len(payment_method) > 100:
        raise Invalid("invalid_payment_method", "give a card number or payment method id", "payment_method")
    if order.total_minor == 0:
        async with db.write() as session:
            row = await _row(session, order.id, lock=True)
            if row.status == "reserved":
                await inventory.convert_order_holds(session, row.id)
                row = await transition(session, row, "paid", actor_id=buyer.id, reason="nothing to pay",
                                       now=clock.now_ms())
                paid = await _load(session, row)
                await checkout_events.order(session, checkout_events.ORDER_PAID, paid)
                return paid
            return await _load(session, row)
    intent_id = await _intent_for(db, provider, order, recorded)
    intent = await provider.confirm_intent(intent_id, payment_method)
    async with db.write() as session:
        applied = await apply_intent(session, intent, actor_id=buyer.id)
    if applied.refund_intent is not None:
        await _refund_late_payment(db, provider, applied)
        raise Conflict("hold_expired", "your holds lapsed before the payment went through; it was refunded")
    if intent.status != "succeeded":
        raise PaymentDeclined(intent.failure_code or "payment_failed", "the payment was declined; try another "
                              "payment method", "payment_method")
    return applied.order


async def _refund_late_payment(db: Database, provider: PaymentProvider, applied: Applied) -> None:
    assert applied.refund_intent is not None
    result = await provider.refund(applied.refund_intent, applied.refund_minor,
                                   idempotency_key=f"late:{applied.refund_intent}")
    async with db.write() as session:
        await session.execute(update(PaymentRow).where(PaymentRow.intent_id == applied.refund_intent).values(
            status="refunded" if result.succeeded else "refund_failed", refund_id=result.id,
            refunded_minor=result.amount_minor if result.succeeded else 0, updated_at=clock.now_ms()))


async def handle_event(db: Database, provider: PaymentProvider, event: ProviderEvent) -> Order:
    """Apply a verified webhook event (at least once delivery: repeats change nothing)."""
    async with db.write() as session:
        applied = await apply_intent(session, event.intent, actor_id=None)
    if applied.refund_intent is not None:
        await _refund_late_payment(db, provider, applied)
    return applied.order


async def refund(db: Database, provider: PaymentProvider, actor: User, order_id: int, *,
                 reason: str = "refunded") -> Order:
    """Refund a paid or fulfilled order in full (its seller or an admin). Units of an order not yet shipped go
    back on sale; shipped ones do not. The provider refund uses a key per order, so it happens once."""
    async with db.read() as session:
        row = await _row(session, order_id)
        if not _may_see(actor, row):
            raise NotFound("order_not_found", "no such order")
        if not _is_seller(actor, row):
            raise Forbidden("not_seller", "only the seller or an admin refunds an order")
        if "refunded" not in TRANSITIONS[row.status]:
            raise Conflict("illegal_transition", f"an order that is {row.status} cannot become refunded")
        payment = (await session.execute(select(PaymentRow).where(PaymentRow.order_id == order_id,
                                                                  PaymentRow.status == "succeeded")
                                         .limit(1))).scalar_one_or_none()
        intent_id, amount = (None, 0) if payment is None else (payment.intent_id, payment.amount_minor)
    result = None
    if intent_id is not None:
        result = await provider.refund(intent_id, amount, idempotency_key=f"refund:order:{order_id}")
        if not result.succeeded:
            raise Conflict("refund_failed", "the payment provider refused the refund")
    now = clock.now_ms()
    async with db.write() as session:
        row = await _row(session, order_id, lock=True)
        shipped = row.status == "fulfilled"
        row = await transition(session, row, "refunded", actor_id=actor.id, reason=reason, now=now)
        await inventory.refund_order_holds(session, row.id, restock=not shipped, now_ms=now)
        if result is not None:
            await session.execute(update(PaymentRow).where(PaymentRow.intent_id == intent_id).values(
                status="refunded", refund_id=result.id, refunded_minor=result.amount_minor, updated_at=now))
        return await _load(session, row)


def address_from(data: Mapping[str, str]) -> ShippingAddress:
    """A ShippingAddress from a mapping with the same keys (missing optional lines allowed)."""
    return ShippingAddress(name=data.get("name", ""), line1=data.get("line1", ""), city=data.get("city", ""),
                           postal_code=data.get("postal_code", ""), country=data.get("country", ""),
                           line2=data.get("line2", ""), region=data.get("region", ""))
