"""Stock and holds: the database row is the truth, and only conditional UPDATEs move units.

Each variant row keeps `available`, `held` and `sold`. Reserving is one statement,
`UPDATE variants SET available = available - q, held = held + q WHERE id = :id AND available >= q`, whose
row count decides: PostgreSQL re-checks the condition against the committed row after waiting for a
concurrent writer's lock, SQLite runs writers one at a time, so no interleaving takes `available` below zero
(and the CHECK constraints would refuse the row if code ever tried). Every hold ends exactly once, through a
conditional UPDATE of its status (`WHERE status = 'active'`): whichever of cancel, expiry and payment wins,
the others match no row and change nothing, so units are released or converted once.

A hold's expiry is a durable job (key "hold-expiry:{id}") scheduled in the reserving transaction, so it
survives restarts and runs once across nodes; cancelling or paying cancels it. Every stock change emits
`stock.changed` through the outbox on `room:{slug}` for each live show whose lineup has the product, or on
`product:{id}` when none has.

Locks are always taken in one order (hold rows, purchase counters, variant rows by id, event topics by name)
so transactions touching several of them cannot deadlock on PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Row, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.user import User
from bus import emit
from commerce import admission, availability, checkout_events, flash_sales, limits
from commerce.errors import DetailedConflict
from commerce.models import FlashSaleRow, HoldRecord, HoldRow, LineupItemRow, ProductRow, VariantRow
from commerce.values import FlashSale, Hold, Variant
from rooms.models import RoomRow, ShowRow
from store import clock
from store.jobs import cancel as cancel_job
from store.jobs import schedule
from store.statements import bound, bound_values, table_of

logger = logging.getLogger(__name__)

STOCK_CHANGED = "stock.changed"
HOLD_EXPIRY = "hold-expiry"
MAX_QUANTITY = 100


def sold_out() -> DetailedConflict:
    """The sold-out refusal. Units can come back (cancels, expiries), so it says when asking again makes
    sense: `retry_after_ms`, the time a process's sold-out hint stays fresh (or at a `stock.changed` event)."""
    return DetailedConflict("sold_out", "sold out: no units are free right now",
                            {"retry_after_ms": availability.TTL_MS}, "quantity")


def expiry_key(hold_id: int) -> str:
    return f"{HOLD_EXPIRY}:{hold_id}"


@dataclass(frozen=True)
class StockLevel:
    """A variant's counters right after a change, as announced in `stock.changed`."""

    product_id: int
    variant_id: int
    available: int
    held: int
    sold: int


_HOLDS, _VARIANTS = table_of(HoldRow), table_of(VariantRow)
_ROOMS, _SHOWS, _LINEUPS = table_of(RoomRow), table_of(ShowRow), table_of(LineupItemRow)
_LIVE_ROOMS_OFFERING = (select(_ROOMS.c.slug).distinct()
                        .join(_SHOWS, _SHOWS.c.room_id == _ROOMS.c.id)
                        .join(_LINEUPS, _LINEUPS.c.show_id == _SHOWS.c.id)
                        .where(_LINEUPS.c.product_id == bindparam("product"), _SHOWS.c.status == "live"))


async def stock_topics(session: AsyncSession, product_id: int) -> list[str]:
    """Where a product's stock changes are announced: its live shows' rooms, else its own topic."""
    slugs = (await session.execute(_LIVE_ROOMS_OFFERING, {"product": product_id})).scalars().all()
    return sorted(f"room:{slug}" for slug in slugs) or [f"product:{product_id}"]


async def announce(session: AsyncSession, levels: Iterable[StockLevel],
                   topics: dict[int, list[str]] | None = None) -> None:
    """Emit `stock.changed` for each level, topics in name order (the lock order of event topics). `topics`:
    each product's `stock_topics`, if read already (before the stock row was locked)."""
    events: list[tuple[str, StockLevel]] = []
    topics = {} if topics is None else dict(topics)
    for level in levels:
        availability.note_after_commit(session, level.product_id, level.variant_id, level.available)
        if level.product_id not in topics:
            topics[level.product_id] = await stock_topics(session, level.product_id)
        events.extend((topic, level) for topic in topics[level.product_id])
    now = clock.now_ms()
    for topic, level in sorted(events, key=lambda item: (item[0], item[1].variant_id)):
        await emit(session, topic, STOCK_CHANGED,
                   {"product_id": level.product_id, "variant_id": level.variant_id, "available": level.available,
                    "held": level.held, "sold": level.sold, "server_time": now})


_COUNTERS = ("available", "held", "sold")


@functools.cache
def _move_statement(lowered: tuple[bool, bool, bool]) -> Any:
    """The conditional UPDATE of `_move` for the counters it lowers (each `lowered` one must stay >= 0)."""
    conditions = [_VARIANTS.c.id == bindparam("variant")]
    delta = {name: bindparam(f"d_{name}", type_=Integer) for name in _COUNTERS}
    conditions += [_VARIANTS.c[name] + delta[name] >= 0 for name, lower in zip(_COUNTERS, lowered, strict=True)
                   if lower]
    return (update(_VARIANTS).where(*conditions)
            .values({name: _VARIANTS.c[name] + delta[name] for name in _COUNTERS})
            .returning(_VARIANTS.c.product_id, _VARIANTS.c.available, _VARIANTS.c.held, _VARIANTS.c.sold))


async def _move(session: AsyncSession, variant_id: int, *, available: int = 0, held: int = 0,
                sold: int = 0) -> StockLevel | None:
    """Shift units between a variant's counters in one conditional UPDATE; None if a counter would go below 0."""
    statement = _move_statement((available < 0, held < 0, sold < 0))
    row = (await session.execute(statement, {"variant": variant_id, "d_available": available, "d_held": held,
                                             "d_sold": sold})).first()
    if row is None:
        return None
    return StockLevel(product_id=row.product_id, variant_id=variant_id, available=row.available, held=row.held,
                      sold=row.sold)


async def take(session: AsyncSession, variant_id: int, quantity: int) -> StockLevel | None:
    """Move `quantity` free units to held: the atomic reserve. None when fewer are free."""
    return await _move(session, variant_id, available=-quantity, held=quantity)


async def restock(session: AsyncSession, product_id: int, variant_id: int, delta: int) -> Variant:
    """Add (or remove free) units; Conflict("not_enough_free_stock") rather than touch held or sold units."""
    owner = await session.scalar(select(VariantRow.product_id).where(VariantRow.id == variant_id))
    if owner != product_id:
        raise NotFound("variant_not_found", "the product has no such variant", "variant_id")
    level = await _move(session, variant_id, available=delta)
    if level is None:
        raise Conflict("not_enough_free_stock", "fewer units are free than you asked to take off", "delta")
    await announce(session, [level])
    row = await session.get(VariantRow, variant_id, populate_existing=True)
    assert row is not None
    return Variant.from_row(row)


def _pick_variant(variant_ids: list[int], variant_id: int | None) -> int:
    if variant_id is None:
        if len(variant_ids) != 1:
            raise Invalid("variant_required", "this product comes in variants; choose one", "variant_id")
        return variant_ids[0]
    if variant_id not in variant_ids:
        raise NotFound("variant_not_found", "the product has no such variant", "variant_id")
    return variant_id


async def _show_price(session: AsyncSession, product_id: int, show_id: int) -> int | None:
    """The product's show price in a live show whose lineup has it (None: no show price)."""
    found = (await session.execute(
        select(ShowRow.status, LineupItemRow.show_price_minor).select_from(ShowRow)
        .outerjoin(LineupItemRow, (LineupItemRow.show_id == ShowRow.id) & (LineupItemRow.product_id == product_id))
        .where(ShowRow.id == show_id))).first()
    if found is None:
        raise NotFound("show_not_found", "no such show", "show_id")
    status, show_price = found
    if status != "live":
        raise Conflict("show_not_live", "the show is not live", "show_id")
    in_lineup = (await session.execute(select(LineupItemRow.product_id).where(
        LineupItemRow.show_id == show_id, LineupItemRow.product_id == product_id))).first()
    if in_lineup is None:
        raise NotFound("not_in_lineup", "the product is not offered in this show", "show_id")
    return None if show_price is None else int(show_price)


_RESERVING = (
    select(ProductRow.status, ProductRow.price_minor, ProductRow.currency, ProductRow.purchase_limit,
           ProductRow.limit_scope, VariantRow.id.label("variant_id"), FlashSaleRow)
    .join(VariantRow, VariantRow.product_id == ProductRow.id)
    .outerjoin(FlashSaleRow, FlashSaleRow.product_id == ProductRow.id)
    .where(ProductRow.id == bindparam("product")).execution_options(populate_existing=True))
"""The product, its variants and its sale in one statement: every reserve reads them in the writer."""
_HOLD_COLUMNS = ("user_id", "product_id", "variant_id", "show_id", "quantity", "unit_price_minor", "currency",
                 "limit_scope", "sale_id", "status", "order_id", "created_at", "expires_at", "ended_at")
_INSERT_HOLD = insert(_HOLDS).values(bound_values(_HOLDS, *_HOLD_COLUMNS)).returning(*_HOLDS.c)
_FREE_UNITS = select(_VARIANTS.c.available).where(_VARIANTS.c.id == bindparam("variant"))


async def reserve(session: AsyncSession, buyer: User, product_id: int, *, hold_seconds: int,
                  variant_id: int | None = None, quantity: int = 1, show_id: int | None = None,
                  queue_token: str | None = None, now_ms: int | None = None) -> Hold:
    """Hold `quantity` units of a product for `buyer` until now + `hold_seconds`.

    Refusals, in the order they are checked: Invalid (quantity, variant), NotFound (product, variant, show,
    lineup), Conflict "product_unavailable", "show_not_live", "sale_not_started", "sale_ended",
    "queue_token_required", "limit_reached", "sale_sold_out", "sold_out". A refusal leaves the caller's transaction with
    partial changes, so callers roll it back (or run this in a savepoint).
    """
    if buyer.disabled:
        raise Forbidden("account_disabled", "the account is disabled")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise Invalid("invalid_quantity", f"quantity must be 1-{MAX_QUANTITY}", "quantity")
    now = clock.now_ms() if now_ms is None else now_ms
    found = (await session.execute(_RESERVING, {"product": product_id})).all()
    if not found or found[0].status == "draft":
        raise NotFound("product_not_found", "no such product")
    product = found[0]
    if product.status != "active":
        raise Conflict("product_unavailable", "the product is not on sale")
    chosen = _pick_variant([row.variant_id for row in found], variant_id)
    price = int(product.price_minor)
    if show_id is not None:
        show_price = await _show_price(session, product_id, show_id)
        if show_price is not None:
            price = show_price
    sale: FlashSale | None = None
    if product.FlashSaleRow is not None:
        sale = FlashSale.from_row(product.FlashSaleRow, product.currency)
        flash_sales.require_open(sale, now)
        price = sale.price.amount_minor
        if sale.admission != "open":
            await admission.use_token(session, sale, buyer.id, queue_token, now)
    sale_id = sale.id if sale is not None and sale.quantity is not None else None
    scope: str | None = None
    if product.purchase_limit is not None:
        scope = limits.scope_key(product.limit_scope, show_id)
        await limits.take(session, product_id, buyer.id, scope, quantity, int(product.purchase_limit))
    values = {"user_id": buyer.id, "product_id": product_id, "variant_id": chosen, "show_id": show_id,
              "quantity": quantity, "unit_price_minor": price, "currency": product.currency, "limit_scope": scope,
              "sale_id": sale_id, "status": "active", "order_id": None, "created_at": now,
              "expires_at": now + hold_seconds * 1000, "ended_at": None}
    row = (await session.execute(_INSERT_HOLD, bound(values))).one()
    await schedule(session, HOLD_EXPIRY, row.expires_at, {"hold_id": row.id}, key=expiry_key(row.id))
    topics = {product_id: await stock_topics(session, product_id)}
    hold_topic = await checkout_events.room_topic(session, show_id)
    # Every reserve of the product takes turns on its sale's and stock's rows (and then its event topic),
    # locked until commit: so they are taken last, after everything that needs no shared lock.
    if sale is not None and sale_id is not None:
        await flash_sales.take_units(session, sale, quantity)
    level = await take(session, chosen, quantity)
    if level is None:
        free = int(await session.scalar(_FREE_UNITS, {"variant": chosen}) or 0)
        availability.note_now(session, product_id, chosen, free, only_variant=variant_id is None)
        raise sold_out()
    await announce(session, [level], topics)
    await checkout_events.hold(session, checkout_events.HOLD_CREATED, row, hold_topic)
    availability.note_after_commit(session, product_id, chosen, level.available, only_variant=variant_id is None)
    return Hold.from_row(row)


@dataclass(frozen=True)
class _Ending:
    """Which holds one kind of ending takes, as statements built once: the conditional UPDATE that ends them
    (parameters "to_status" and "ended" besides the match) and, for endings of active holds other than their
    own expiry, the read of their ids whose expiry jobs are cancelled first."""

    end: Any
    pending_expiries: Any | None


def _ending(*conditions: ColumnElement[bool], cancels_expiries: bool) -> _Ending:
    return _Ending(end=update(_HOLDS).where(*conditions)
                   .values(status=bindparam("to_status"), ended_at=bindparam("ended")).returning(*_HOLDS.c),
                   pending_expiries=select(_HOLDS.c.id).where(*conditions).order_by(_HOLDS.c.id)
                   if cancels_expiries else None)


_OPEN = (_HOLDS.c.status == "active", _HOLDS.c.order_id.is_(None))
_CANCELLABLE = _ending(_HOLDS.c.id == bindparam("hold"), _HOLDS.c.user_id == bindparam("user"), *_OPEN,
                       cancels_expiries=True)
_EXPIRED = _ending(_HOLDS.c.id == bindparam("hold"), *_OPEN, _HOLDS.c.expires_at <= bindparam("now"),
                   cancels_expiries=False)  # the expiry job itself is running
_ORDER_ACTIVE = _ending(_HOLDS.c.order_id == bindparam("order"), _HOLDS.c.status == "active", cancels_expiries=True)
_ORDER_PAID = _ending(_HOLDS.c.order_id == bindparam("order"), _HOLDS.c.status == "paid", cancels_expiries=False)


async def _end(session: AsyncSession, ending: _Ending, match: dict[str, Any], to_status: str,
               now: int) -> list[Row[Any]]:
    """Move the matching holds to `to_status` in one conditional UPDATE; returns the rows that moved.

    Their expiry jobs are cancelled first, before the hold rows are locked: the job runner locks a job's row
    before its hold's, and ending a hold the other way round (hold, then job) deadlocks with it on
    PostgreSQL. In this order an ending that waits for a running expiry sees the hold already expired. (A
    refusal after this rolls the cancelled jobs back with the rest.)"""
    if ending.pending_expiries is not None:
        for hold_id in (await session.execute(ending.pending_expiries, match)).scalars().all():
            await cancel_job(session, expiry_key(hold_id))
    rows = (await session.execute(ending.end, {**match, "to_status": to_status, "ended": now})).all()
    return sorted(rows, key=lambda row: (row.variant_id, row.id))


async def _release(session: AsyncSession, rows: Sequence[HoldRecord], *, from_sold: bool = False,
                   restock: bool = True) -> None:
    """Give ended holds' units back (to free stock; from sold ones too for a refund) and uncount them."""
    for row in rows:
        if row.limit_scope is not None:
            await limits.give_back(session, row.product_id, row.user_id, row.limit_scope, row.quantity)
        if row.sale_id is not None and not from_sold:
            await flash_sales.give_back_units(session, row.sale_id, row.quantity)
    levels = []
    for row in rows:
        if from_sold:
            level = await _move(session, row.variant_id, sold=-row.quantity,
                                available=row.quantity if restock else 0)
        else:
            level = await _move(session, row.variant_id, held=-row.quantity, available=row.quantity)
        if level is None:
            raise RuntimeError(f"variant {row.variant_id} lacks the units of hold {row.id}")
        levels.append(level)
    await announce(session, levels)


async def get_hold(session: AsyncSession, hold_id: int) -> Hold:
    row = await session.get(HoldRow, hold_id, populate_existing=True)
    if row is None:
        raise NotFound("hold_not_found", "no such hold")
    return Hold.from_row(row)


async def cancel_hold(session: AsyncSession, buyer: User, hold_id: int, *, now_ms: int | None = None) -> Hold:
    """Release the buyer's active hold at once. A hold already in an order is released by cancelling the
    order (Conflict "hold_in_order"); one that ended meanwhile is Conflict("hold_not_active")."""
    now = clock.now_ms() if now_ms is None else now_ms
    rows = await _end(session, _CANCELLABLE, {"hold": hold_id, "user": buyer.id}, "cancelled", now)
    if not rows:
        current = await session.get(HoldRow, hold_id, populate_existing=True)
        if current is None or current.user_id != buyer.id:
            raise NotFound("hold_not_found", "no such hold")
        if current.status == "active":
            raise Conflict("hold_in_order", "the hold is part of an order; cancel the order instead")
        raise Conflict("hold_not_active", f"the hold is already {current.status}")
    await _release(session, rows)
    return Hold.from_row(rows[0])


async def expire_hold(session: AsyncSession, hold_id: int, *, now_ms: int | None = None) -> Hold | None:
    """Release a hold outside any order whose time is up (the expiry job's work); None if it ended otherwise,
    is not due, or belongs to an order by now (the order expires as a whole: `orders.expire_order`)."""
    now = clock.now_ms() if now_ms is None else now_ms
    rows = await _end(session, _EXPIRED, {"hold": hold_id, "now": now}, "expired", now)
    if not rows:
        return None
    await _release(session, rows)
    await checkout_events.holds(session, checkout_events.HOLD_EXPIRED, rows)
    return Hold.from_row(rows[0])


async def release_order_holds(session: AsyncSession, order_id: int, to_status: str, *,
                              now_ms: int | None = None) -> list[Hold]:
    """End every active hold of an order (cancelled or expired with it) and give their units back."""
    now = clock.now_ms() if now_ms is None else now_ms
    rows = await _end(session, _ORDER_ACTIVE, {"order": order_id}, to_status, now)
    await _release(session, rows)
    if to_status == "expired":
        await checkout_events.holds(session, checkout_events.HOLD_EXPIRED, rows)
    return [Hold.from_row(row) for row in rows]


async def convert_order_holds(session: AsyncSession, order_id: int, *, now_ms: int | None = None) -> list[Hold]:
    """Paying: the order's active holds become sold units (held → sold) and their expiry jobs are cancelled."""
    now = clock.now_ms() if now_ms is None else now_ms
    rows = await _end(session, _ORDER_ACTIVE, {"order": order_id}, "paid", now)
    levels = []
    for row in rows:
        level = await _move(session, row.variant_id, held=-row.quantity, sold=row.quantity)
        if level is None:
            raise RuntimeError(f"variant {row.variant_id} lacks the held units of hold {row.id}")
        levels.append(level)
    await announce(session, levels)
    return [Hold.from_row(row) for row in rows]


async def refund_order_holds(session: AsyncSession, order_id: int, *, restock: bool,
                             now_ms: int | None = None) -> list[Hold]:
    """A refund: the order's sold units are uncounted from the buyer's limit, and back on sale if `restock`."""
    now = clock.now_ms() if now_ms is None else now_ms
    rows = await _end(session, _ORDER_PAID, {"order": order_id}, "refunded", now)
    await _release(session, rows, from_sold=True, restock=restock)
    return [Hold.from_row(row) for row in rows]


async def active_holds(session: AsyncSession, user_id: int, show_id: int | None = None) -> list[Hold]:
    """The buyer's cart: active holds not yet in an order, oldest first (all, or those of one show)."""
    query = select(HoldRow).where(HoldRow.user_id == user_id, HoldRow.status == "active",
                                  HoldRow.order_id.is_(None))
    if show_id is not None:
        query = query.where(HoldRow.show_id == show_id)
    rows = (await session.execute(query.order_by(HoldRow.id).execution_options(populate_existing=True))).scalars()
    return [Hold.from_row(row) for row in rows]


async def available(session: AsyncSession, product_id: int, variant_id: int | None = None) -> int:
    """Free units of a product (or one variant) as of this read: a hint for fast refusals, never a promise."""
    query = select(VariantRow.available).where(VariantRow.product_id == product_id)
    if variant_id is not None:
        query = query.where(VariantRow.id == variant_id)
    return sum(int(value) for value in (await session.execute(query)).scalars())
