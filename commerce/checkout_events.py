"""A buyer's checkout as it happens, for the live overlay: hold created (with its deadline), hold expired,
order paid, payment declined. Emitted through the outbox on the room topic of the show the hold or order
belongs to (the topic whose row `stock.changed` already locks in these transactions), with the buyer's id
so the overlay tells that buyer privately and the room's hosts in their sales ticker. Outside a show there
is no room to tell, and nothing is emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bus import emit
from commerce.models import HoldRecord
from commerce.values import Order
from rooms.models import RoomRow, ShowRow
from store import clock
from store.statements import table_of

HOLD_CREATED = "checkout.hold_created"
HOLD_EXPIRED = "checkout.hold_expired"
ORDER_PAID = "checkout.paid"
PAYMENT_DECLINED = "checkout.declined"


_ROOMS, _SHOWS = table_of(RoomRow), table_of(ShowRow)
_SHOW_ROOM_SLUG = (select(_ROOMS.c.slug).join(_SHOWS, _SHOWS.c.room_id == _ROOMS.c.id)
                   .where(_SHOWS.c.id == bindparam("show")))


async def room_topic(session: AsyncSession, show_id: int | None) -> str | None:
    """The topic a show's checkout events go to (None outside a show)."""
    if show_id is None:
        return None
    slug = await session.scalar(_SHOW_ROOM_SLUG, {"show": show_id})
    return None if slug is None else f"room:{slug}"


def _hold(row: HoldRecord) -> dict[str, Any]:
    return {"user_id": row.user_id, "hold_id": row.id, "product_id": row.product_id, "variant_id": row.variant_id,
            "show_id": row.show_id, "quantity": row.quantity, "unit_price_minor": row.unit_price_minor,
            "currency": row.currency, "expires_at": row.expires_at, "order_id": row.order_id,
            "server_time": clock.now_ms()}


async def holds(session: AsyncSession, type: str, rows: Sequence[HoldRecord]) -> None:
    """Announce holds that were created or expired."""
    for row in rows:
        await hold(session, type, row, await room_topic(session, row.show_id))


async def hold(session: AsyncSession, type: str, row: HoldRecord, topic: str | None) -> None:
    """Announce one hold on its show's `room_topic`, read already."""
    if topic is not None:
        await emit(session, topic, type, _hold(row))


async def order(session: AsyncSession, type: str, placed: Order, **extra: Any) -> None:
    """Announce a paid order or a declined payment of one."""
    topic = await room_topic(session, placed.show_id)
    if topic is None:
        return
    await emit(session, topic, type, {
        "user_id": placed.buyer_id, "seller_id": placed.seller_id, "order_id": placed.id,
        "show_id": placed.show_id, "status": placed.status, "total_minor": placed.total_minor,
        "currency": placed.currency, "items": [{"product_id": line.product_id, "title": line.title,
                                                "quantity": line.quantity} for line in placed.lines],
        "server_time": clock.now_ms(), **extra})
