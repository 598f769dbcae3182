"""Stock on screen: every `stock.changed` of a room's products reaches its viewers, coalesced to at most
`overlay.stock_updates_per_second` per product and room, and always ending on the true value.

The commerce event only says that a product's stock moved; the update sent to viewers is read from the
database when it goes out, so however many changes were coalesced, the last update carries the value as of
after the last change. The value is announced through `overlay.announce.changed`, so of several nodes that
hear the same change, one announces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from commerce.models import VariantRow
from config.schema import OverlaySettings
from overlay import announce
from overlay.show import stock_state
from signaling.background import spawn
from signaling.room_feed import publish
from store import Database

logger = logging.getLogger(__name__)

STOCK_EVENT = "stock.changed"


@dataclass
class _Pending:
    last_sent: float = float("-inf")
    scheduled: bool = False
    again: bool = False


async def stock_update(session: AsyncSession, product_id: int, low_stock: int) -> dict[str, object]:
    """The payload of a stock update for viewers, as of this transaction."""
    rows = (await session.execute(select(VariantRow.id, VariantRow.available, VariantRow.sold)
                                  .where(VariantRow.product_id == product_id).order_by(VariantRow.id))).all()
    available = sum(int(row.available) for row in rows)
    return {"product_id": product_id, "available": available, "sold": sum(int(row.sold) for row in rows),
            "state": stock_state(available, low_stock),
            "variants": [{"variant_id": row.id, "available": row.available} for row in rows]}


class StockFeed:
    """Per (room, product): send at once if the last update is older than the interval, else once at the
    end of the interval; a change while an update is being written schedules one more."""

    def __init__(self, database: Callable[[], Database], settings: Callable[[], OverlaySettings],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._settings = settings
        self._monotonic = monotonic
        self._pending: dict[tuple[str, int], _Pending] = {}
        self.sent = 0

    def changed(self, slug: str, product_id: int) -> None:
        key = (slug, product_id)
        pending = self._pending.setdefault(key, _Pending())
        if pending.scheduled:
            pending.again = True
            return
        pending.scheduled = True
        interval = 1.0 / self._settings().stock_updates_per_second
        delay = max(0.0, pending.last_sent + interval - self._monotonic())
        spawn(self._flush_after(key, pending, delay))

    async def _flush_after(self, key: tuple[str, int], pending: _Pending, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        slug, product_id = key
        pending.again = False
        pending.last_sent = self._monotonic()
        try:
            async with self._database().write() as session:
                update = await stock_update(session, product_id, self._settings().low_stock)
                if await announce.changed(session, slug, f"stock:{product_id}", update):
                    await publish(session, slug, STOCK_EVENT, update)
                    self.sent += 1
        except Exception:
            logger.exception("stock update failed", extra={"room": slug, "product_id": product_id})
            pending.again = True
        pending.scheduled = False
        if pending.again:
            self.changed(slug, product_id)

    def forget(self, slug: str) -> None:
        """The node left the room: drop its products' timing."""
        for key in [key for key in self._pending if key[0] == slug]:
            del self._pending[key]
