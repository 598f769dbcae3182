"""The durable jobs of commerce, by kind: hold expiry, lottery draws, idempotency-key housekeeping.

`HANDLERS` goes into the web runtime's job handlers, so whichever node's runner claims a job runs it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from commerce import admission, idempotency, inventory, orders
from commerce.flash_sales import LOTTERY_DRAW
from commerce.models import HoldRow
from store import clock
from store.jobs import Handler, JobContext, schedule


async def expire_hold(session: AsyncSession, job: JobContext) -> None:
    """A hold's time is up: release it, or expire the whole order it belongs to (all its holds go back)."""
    hold_id = int(job.payload["hold_id"])
    now = clock.now_ms()
    row = await session.get(HoldRow, hold_id, populate_existing=True)
    if row is None or row.status != "active":
        return
    if row.expires_at > now:
        # Run early (a node's clock ahead of the one that reserved): come back at the deadline instead.
        await schedule(session, inventory.HOLD_EXPIRY, row.expires_at, {"hold_id": hold_id},
                       key=inventory.expiry_key(hold_id))
        return
    if row.order_id is None and await inventory.expire_hold(session, hold_id, now_ms=now) is not None:
        return
    # In an order (perhaps since a checkout that committed while this job waited for the hold's row lock):
    # the order expires as a whole, so an order never keeps some of its holds and loses others.
    row = await session.get(HoldRow, hold_id, populate_existing=True)
    if row is not None and row.status == "active" and row.order_id is not None:
        await orders.expire_order(session, row.order_id, now_ms=now)


async def draw_lottery(session: AsyncSession, job: JobContext) -> None:
    await admission.draw(session, int(job.payload["sale_id"]))


HANDLERS: dict[str, Handler] = {
    inventory.HOLD_EXPIRY: expire_hold,
    LOTTERY_DRAW: draw_lottery,
    idempotency.PURGE: idempotency.purge_job,
}
