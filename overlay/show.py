"""What a live show puts on screen: pinned products (cards with price and stock) and the running flash sale.

Pins and the studio's flash sale are stored per show (`show_overlays`), so any node rebuilds the overlay
from the database: a snapshot never depends on which process served the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Invalid, NotFound
from accounts.user import User
from commerce import flash_sales
from commerce.catalog import products_by_id
from commerce.lineup import get_lineup
from commerce.models import FlashSaleRow
from commerce.values import FlashSale, LineupEntry
from overlay.models import ShowOverlayRow
from store import clock

StockState = Literal["in_stock", "low_stock", "sold_out"]
SALE_SECONDS_MAX = 24 * 3600


def stock_state(available: int, low_stock: int) -> StockState:
    if available <= 0:
        return "sold_out"
    return "low_stock" if available <= low_stock else "in_stock"


@dataclass(frozen=True)
class Card:
    """A pinned product as viewers see it."""

    product_id: int
    title: str
    price_minor: int
    """What it costs now: the running flash sale's price, else the show price, else its own."""
    currency: str
    available: int
    sold: int
    state: StockState
    variants: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "title": self.title, "price_minor": self.price_minor,
                "currency": self.currency, "available": self.available, "sold": self.sold, "state": self.state,
                "variants": self.variants}


async def overlay_row(session: AsyncSession, show_id: int, *, create: bool = False) -> ShowOverlayRow | None:
    row = await session.get(ShowOverlayRow, show_id, populate_existing=True)
    if row is None and create:
        row = ShowOverlayRow(show_id=show_id, pinned=[], slow_mode_seconds=0, sale_product_id=None,
                             sale_quantity=None, updated_at=clock.now_ms())
        session.add(row)
        await session.flush()
    return row


async def running_sale(session: AsyncSession, product_id: int, currency: str, now: int) -> FlashSale | None:
    sale = await flash_sales.sale_for_product(session, product_id, currency)
    if sale is None or sale.ends_at <= now or sale.starts_at > now:
        return None
    return sale


async def cards(session: AsyncSession, show_id: int, product_ids: list[int], low_stock: int) -> list[Card]:
    """Cards of `product_ids` in that order (products gone from the catalogue are left out)."""
    if not product_ids:
        return []
    now = clock.now_ms()
    products = await products_by_id(session, product_ids)
    show_prices = {entry.product.id: entry for entry in await get_lineup(session, show_id)}
    out = []
    for product_id in product_ids:
        product = products.get(product_id)
        if product is None:
            continue
        entry = show_prices.get(product_id)
        price = entry.price if entry is not None else product.price
        sale = await running_sale(session, product_id, product.price.currency, now)
        price_minor = sale.price.amount_minor if sale is not None else price.amount_minor
        out.append(Card(product_id=product.id, title=product.title, price_minor=price_minor,
                        currency=price.currency, available=product.available,
                        sold=sum(v.sold for v in product.variants),
                        state=stock_state(product.available, low_stock),
                        variants=[{"variant_id": v.id, "sku": v.sku, "options": dict(v.options),
                                   "available": v.available} for v in product.variants]))
    return out


async def pinned_ids(session: AsyncSession, show_id: int) -> list[int]:
    row = await overlay_row(session, show_id)
    return list(row.pinned) if row is not None else []


async def _lineup_entry(session: AsyncSession, show_id: int, product_id: int) -> LineupEntry:
    for entry in await get_lineup(session, show_id):
        if entry.product.id == product_id:
            return entry
    raise NotFound("not_in_lineup", "pin products of the show's lineup; add it to the lineup first", "product_id")


async def pin(session: AsyncSession, show_id: int, product_id: int, max_pinned: int) -> list[int]:
    """Pin a lineup product at the end (pinning it again changes nothing)."""
    await _lineup_entry(session, show_id, product_id)
    row = await overlay_row(session, show_id, create=True)
    assert row is not None
    if product_id in row.pinned:
        return list(row.pinned)
    if len(row.pinned) >= max_pinned:
        raise Conflict("pin_limit", f"at most {max_pinned} products are pinned at once; unpin one first",
                       "product_id")
    row.pinned = [*row.pinned, product_id]
    row.updated_at = clock.now_ms()
    await session.flush()
    return list(row.pinned)


async def unpin(session: AsyncSession, show_id: int, product_id: int) -> list[int]:
    row = await overlay_row(session, show_id)
    if row is None or product_id not in row.pinned:
        raise NotFound("not_pinned", "the product is not pinned", "product_id")
    row.pinned = [pinned for pinned in row.pinned if pinned != product_id]
    row.updated_at = clock.now_ms()
    await session.flush()
    return list(row.pinned)


async def reorder(session: AsyncSession, show_id: int, product_ids: list[int]) -> list[int]:
    row = await overlay_row(session, show_id)
    current = list(row.pinned) if row is not None else []
    if sorted(current) != sorted(product_ids) or len(set(product_ids)) != len(product_ids):
        raise Invalid("pins_mismatch", "list every pinned product exactly once", "product_ids")
    if row is not None:
        row.pinned = list(product_ids)
        row.updated_at = clock.now_ms()
        await session.flush()
    return list(product_ids)


async def start_sale(session: AsyncSession, actor: User, show_id: int, product_id: int, *, price_minor: int,
                     duration_seconds: int, quantity: int | None) -> FlashSale:
    """Start a flash sale of a lineup product now, for `duration_seconds`; one sale per show at a time.
    A product's earlier sale that is over is replaced."""
    if not 1 <= duration_seconds <= SALE_SECONDS_MAX:
        raise Invalid("invalid_duration", f"duration_seconds must be 1-{SALE_SECONDS_MAX}", "duration_seconds")
    if quantity is not None and quantity < 1:
        raise Invalid("invalid_quantity", "quantity must be at least 1", "quantity")
    await _lineup_entry(session, show_id, product_id)
    row = await overlay_row(session, show_id, create=True)
    assert row is not None
    now = clock.now_ms()
    if row.sale_product_id is not None:
        current = await session.scalar(select(FlashSaleRow.ends_at).where(
            FlashSaleRow.product_id == row.sale_product_id))
        if current is not None and current > now:
            raise Conflict("sale_running", "a flash sale is running in this show; stop it first")
    over = await session.scalar(select(FlashSaleRow.id).where(FlashSaleRow.product_id == product_id,
                                                              FlashSaleRow.ends_at <= now))
    if over is not None:
        await session.execute(delete(FlashSaleRow).where(FlashSaleRow.id == over))
    sale = await flash_sales.set_sale(session, actor, product_id, price_minor=price_minor, starts_at=now,
                                      ends_at=now + duration_seconds * 1000, quantity=quantity, now_ms=now)
    row.sale_product_id, row.sale_quantity, row.updated_at = product_id, quantity, now
    await session.flush()
    return sale


async def stop_sale(session: AsyncSession, actor: User, show_id: int) -> int:
    """End the show's running flash sale now; returns its product id."""
    row = await overlay_row(session, show_id)
    if row is None or row.sale_product_id is None:
        raise NotFound("sale_not_found", "no flash sale was started in this show")
    await flash_sales.end_sale_now(session, actor, row.sale_product_id)
    product_id = row.sale_product_id
    row.sale_product_id, row.sale_quantity, row.updated_at = None, None, clock.now_ms()
    await session.flush()
    return product_id


def sale_dict(sale: FlashSale, quantity: int | None) -> dict[str, Any]:
    return {"sale_id": sale.id, "product_id": sale.product_id, "price_minor": sale.price.amount_minor,
            "currency": sale.price.currency, "starts_at": sale.starts_at, "ends_at": sale.ends_at,
            "admission": sale.admission, "quantity": quantity}


async def current_sale(session: AsyncSession, show_id: int) -> dict[str, Any] | None:
    """The show's running flash sale with its server deadlines, or None."""
    row = await overlay_row(session, show_id)
    if row is None or row.sale_product_id is None:
        return None
    products = await products_by_id(session, [row.sale_product_id])
    product = products.get(row.sale_product_id)
    if product is None:
        return None
    sale = await running_sale(session, product.id, product.price.currency, clock.now_ms())
    return None if sale is None else sale_dict(sale, row.sale_quantity)


async def slow_mode(session: AsyncSession, show_id: int | None) -> int:
    if show_id is None:
        return 0
    row = await overlay_row(session, show_id)
    return row.slow_mode_seconds if row is not None else 0


async def set_slow_mode(session: AsyncSession, show_id: int, seconds: int) -> int:
    if not 0 <= seconds <= 3600:
        raise Invalid("invalid_slow_mode", "seconds must be 0-3600", "seconds")
    row = await overlay_row(session, show_id, create=True)
    assert row is not None
    row.slow_mode_seconds, row.updated_at = seconds, clock.now_ms()
    await session.flush()
    return seconds
