"""A show's lineup: which products are offered in which show, in order, with an optional show price.

Whoever may publish into the room (owner, co-hosts, admins) arranges its shows' lineups, with products they
own (admins with any). Being in a live show's lineup is also what routes a product's stock events to the
room's topic, where the overlay hears them.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, Invalid, NotFound
from accounts.user import User
from commerce.catalog import product_row, products_by_id, validate_price
from commerce.models import LineupItemRow
from commerce.values import LineupEntry
from rooms.service import get_room_by_id, get_show
from rooms.values import can_publish
from store import clock

LINEUP_MAX = 200


async def _require_publisher(session: AsyncSession, actor: User, show_id: int) -> None:
    show = await get_show(session, show_id)
    if show.status == "ended":
        raise Conflict("show_ended", "the show has ended", "show_id")
    room = await get_room_by_id(session, show.room_id)
    if not can_publish(actor, room):
        raise Forbidden("not_room_publisher", "only the room's owner, co-hosts and admins arrange its lineups")


async def get_lineup(session: AsyncSession, show_id: int) -> list[LineupEntry]:
    """The show's products in lineup order (drafts are left out: buyers cannot see them)."""
    await get_show(session, show_id)
    rows = (await session.execute(select(LineupItemRow).where(LineupItemRow.show_id == show_id)
                                  .order_by(LineupItemRow.position, LineupItemRow.added_at))).scalars().all()
    if not rows:
        return []
    products = await products_by_id(session, [row.product_id for row in rows])
    return [LineupEntry(show_id=row.show_id, position=row.position, show_price_minor=row.show_price_minor,
                        product=products[row.product_id])
            for row in rows if products[row.product_id].status != "draft"]


async def add(session: AsyncSession, actor: User, show_id: int, product_id: int, *,
              show_price_minor: int | None = None) -> list[LineupEntry]:
    """Put a product at the end of the show's lineup, or change its show price if it is there already."""
    await _require_publisher(session, actor, show_id)
    product = await product_row(session, product_id)
    if not (actor.is_admin or product.owner_id == actor.id):
        raise Forbidden("not_product_owner", "you can only offer your own products", "product_id")
    if show_price_minor is not None:
        validate_price(show_price_minor, "show_price_minor")
    row = await session.get(LineupItemRow, (show_id, product_id), populate_existing=True)
    if row is None:
        count = int(await session.scalar(select(func.count()).select_from(LineupItemRow)
                                         .where(LineupItemRow.show_id == show_id)) or 0)
        if count >= LINEUP_MAX:
            raise Invalid("lineup_full", f"a lineup has at most {LINEUP_MAX} products", "product_id")
        last = await session.scalar(select(func.max(LineupItemRow.position)).where(LineupItemRow.show_id == show_id))
        session.add(LineupItemRow(show_id=show_id, product_id=product_id, position=(last or 0) + 1,
                                  show_price_minor=show_price_minor, added_at=clock.now_ms()))
    else:
        row.show_price_minor = show_price_minor
    await session.flush()
    return await get_lineup(session, show_id)


async def remove(session: AsyncSession, actor: User, show_id: int, product_id: int) -> list[LineupEntry]:
    """Take a product out of the lineup (holds already made in the show stay valid until they end)."""
    await _require_publisher(session, actor, show_id)
    removed = await session.execute(delete(LineupItemRow).where(LineupItemRow.show_id == show_id,
                                                                LineupItemRow.product_id == product_id))
    if not getattr(removed, "rowcount", 0):
        raise NotFound("not_in_lineup", "the product is not in this show's lineup", "product_id")
    return await get_lineup(session, show_id)


async def reorder(session: AsyncSession, actor: User, show_id: int, product_ids: list[int]) -> list[LineupEntry]:
    """Set the lineup order: `product_ids` must list exactly the products in it."""
    await _require_publisher(session, actor, show_id)
    rows = {row.product_id: row for row in (await session.execute(
        select(LineupItemRow).where(LineupItemRow.show_id == show_id)
        .execution_options(populate_existing=True))).scalars()}
    if sorted(product_ids) != sorted(rows) or len(set(product_ids)) != len(product_ids):
        raise Invalid("lineup_mismatch", "list every product of the lineup exactly once", "product_ids")
    for position, product_id in enumerate(product_ids, start=1):
        rows[product_id].position = position
    await session.flush()
    return await get_lineup(session, show_id)
