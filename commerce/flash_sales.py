"""Flash sales: a product goes on sale at a server time, at a price, until an end time.

Times are server milliseconds since the epoch; clients get deadlines (`starts_at`, `ends_at`,
`server_time`), never durations, so a slow network cannot shift a buyer's idea of when the sale opens.
A request before the start is refused with the start time ("sale_not_started"), one after the end with
"sale_ended". How buyers get in is the sale's `admission`: "open" (first come, first served through the
atomic reserve), "queue" (FIFO with purchase tokens) or "lottery" (entries during the window, a recorded
seed decides the order; purchases start at the draw). See `commerce.admission`.
"""

from __future__ import annotations

import secrets

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.user import User
from commerce.errors import DetailedConflict
from commerce.models import FlashSaleRow, ProductRow
from commerce.values import ADMISSIONS, FlashSale
from store import clock
from store.jobs import cancel as cancel_job
from store.jobs import schedule
from store.statements import table_of

LOTTERY_DRAW = "lottery-draw"
QUEUE_FACTOR_MAX = 100
TOKEN_SECONDS_MIN = 10
TOKEN_SECONDS_MAX = 3600
SALE_MAX_MS = 30 * 86_400_000
PRICE_MAX_MINOR = 100_000_000_00


def draw_key(sale_id: int) -> str:
    return f"{LOTTERY_DRAW}:{sale_id}"


async def product_row(session: AsyncSession, product_id: int) -> ProductRow:
    row = await session.get(ProductRow, product_id, populate_existing=True)
    if row is None:
        raise NotFound("product_not_found", "no such product")
    return row


async def sale_for_product(session: AsyncSession, product_id: int, currency: str) -> FlashSale | None:
    row = (await session.execute(select(FlashSaleRow).where(FlashSaleRow.product_id == product_id)
                                 .execution_options(populate_existing=True))).scalar_one_or_none()
    return None if row is None else FlashSale.from_row(row, currency)


async def get_sale(session: AsyncSession, sale_id: int) -> FlashSale:
    row = await session.get(FlashSaleRow, sale_id, populate_existing=True)
    if row is None:
        raise NotFound("sale_not_found", "no such flash sale")
    product = await product_row(session, row.product_id)
    return FlashSale.from_row(row, product.currency)


def not_started(starts_at: int, now: int, what: str = "the sale starts") -> DetailedConflict:
    return DetailedConflict("sale_not_started", f"{what} at {starts_at} (server time, ms since the epoch)",
                            {"starts_at": starts_at, "server_time": now})


_SALES = table_of(FlashSaleRow)
_TAKE_SALE_UNITS = (update(_SALES).where(_SALES.c.id == bindparam("sale"),
                                         _SALES.c.taken + bindparam("units") <= _SALES.c.quantity)
                    .values(taken=_SALES.c.taken + bindparam("units")))
_GIVE_BACK_SALE_UNITS = (update(_SALES).where(_SALES.c.id == bindparam("sale"), _SALES.c.taken >= bindparam("units"))
                         .values(taken=_SALES.c.taken - bindparam("units")))


async def take_units(session: AsyncSession, sale: FlashSale, quantity: int) -> None:
    """Count `quantity` units against a sale with a quantity, in one conditional UPDATE that cannot pass it
    under any concurrency; Conflict "sale_sold_out" when the sale's units are gone (the stock may not be)."""
    taken = await session.execute(_TAKE_SALE_UNITS, {"sale": sale.id, "units": quantity})
    if not getattr(taken, "rowcount", 0):
        raise Conflict("sale_sold_out", f"the sale's {sale.quantity} units at this price are gone")


async def give_back_units(session: AsyncSession, sale_id: int, quantity: int) -> None:
    """A hold taken from a sale ended unpaid: its units are on offer at the sale price again."""
    await session.execute(_GIVE_BACK_SALE_UNITS, {"sale": sale_id, "units": quantity})


def require_open(sale: FlashSale, now: int) -> None:
    """Refuse a purchase outside the sale: "sale_not_started" with the start time, or "sale_ended".

    A lottery's purchases start at its draw, after the entry window; its tokens then bound the purchase time.
    """
    if sale.admission == "lottery":
        if sale.drawn_at is None:
            raise not_started(sale.ends_at, now, "purchases open at the draw, which is")
        return
    if now < sale.starts_at:
        raise not_started(sale.starts_at, now)
    if now >= sale.ends_at:
        raise DetailedConflict("sale_ended", "the sale has ended", {"ends_at": sale.ends_at, "server_time": now})


async def set_sale(session: AsyncSession, actor: User, product_id: int, *, price_minor: int, starts_at: int,
                   ends_at: int, admission: str = "open", queue_factor: int = 2, token_seconds: int = 120,
                   quantity: int | None = None, now_ms: int | None = None) -> FlashSale:
    """Put a product on sale (owner or admin), or change its sale while that has not started yet
    (Conflict "sale_already_started" afterwards). A lottery's draw is a durable job at `ends_at`."""
    product = await product_row(session, product_id)
    if actor.disabled or not (actor.is_admin or actor.id == product.owner_id):
        raise Forbidden("not_product_owner", "only the product's owner or an admin can put it on sale")
    now = clock.now_ms() if now_ms is None else now_ms
    if not starts_at < ends_at <= starts_at + SALE_MAX_MS:
        raise Invalid("invalid_window", "ends_at must come after starts_at, within 30 days", "ends_at")
    if ends_at <= now:
        raise Invalid("invalid_window", "the sale would be over already", "ends_at")
    if admission not in ADMISSIONS:
        raise Invalid("invalid_admission", f"admission must be one of {', '.join(ADMISSIONS)}", "admission")
    if not 1 <= queue_factor <= QUEUE_FACTOR_MAX:
        raise Invalid("invalid_queue_factor", f"queue_factor must be 1-{QUEUE_FACTOR_MAX}", "queue_factor")
    if quantity is not None and quantity < 1:
        raise Invalid("invalid_quantity", "quantity must be at least 1", "quantity")
    if not TOKEN_SECONDS_MIN <= token_seconds <= TOKEN_SECONDS_MAX:
        raise Invalid("invalid_token_seconds", f"token_seconds must be {TOKEN_SECONDS_MIN}-{TOKEN_SECONDS_MAX}",
                      "token_seconds")
    row = (await session.execute(select(FlashSaleRow).where(FlashSaleRow.product_id == product_id)
                                 .with_for_update().execution_options(populate_existing=True))).scalar_one_or_none()
    if row is not None and row.starts_at <= now:
        raise Conflict("sale_already_started", "a started sale cannot be changed")
    if row is None:
        row = FlashSaleRow(product_id=product_id, created_at=now)
        session.add(row)
    if not 0 <= price_minor <= PRICE_MAX_MINOR:
        raise Invalid("invalid_price", f"price_minor must be 0-{PRICE_MAX_MINOR} minor units", "price_minor")
    row.price_minor = price_minor
    row.starts_at, row.ends_at = starts_at, ends_at
    row.admission, row.queue_factor, row.token_seconds = admission, queue_factor, token_seconds
    row.quantity, row.taken = quantity, 0
    # Commit-reveal: a lottery's seed is chosen now, before any entry, and only its SHA-256 is published
    # until the draw reveals it (a changed sale commits to a new seed; entries open only at starts_at).
    row.seed = secrets.token_hex(16) if admission == "lottery" else None
    row.drawn_at = None
    await session.flush()
    if admission == "lottery":
        await schedule(session, LOTTERY_DRAW, ends_at, {"sale_id": row.id}, key=draw_key(row.id))
    else:
        await cancel_job(session, draw_key(row.id))
    return FlashSale.from_row(row, product.currency)


async def end_sale_now(session: AsyncSession, actor: User, product_id: int, *, now_ms: int | None = None) -> None:
    """Remove a product's sale that has not started, or end a running one now (owner or admin)."""
    product = await product_row(session, product_id)
    if actor.disabled or not (actor.is_admin or actor.id == product.owner_id):
        raise Forbidden("not_product_owner", "only the product's owner or an admin can end its sale")
    now = clock.now_ms() if now_ms is None else now_ms
    row = (await session.execute(select(FlashSaleRow).where(FlashSaleRow.product_id == product_id)
                                 .with_for_update().execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound("sale_not_found", "the product has no flash sale")
    if row.starts_at > now:
        await cancel_job(session, draw_key(row.id))
        await session.delete(row)
    elif row.ends_at > now:
        row.ends_at = max(now, row.starts_at + 1)
        if row.admission == "lottery" and row.drawn_at is None:
            await schedule(session, LOTTERY_DRAW, row.ends_at, {"sale_id": row.id}, key=draw_key(row.id))
    await session.flush()
