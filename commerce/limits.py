"""Purchase limits: how many units of a product one buyer may hold or own, per show or overall.

The count lives in a counter row that only a conditional UPDATE raises (`units + q <= limit`), in the same
transaction as the hold it pays for. On PostgreSQL a second transaction of the same buyer waits for the
first's row lock and then re-evaluates the condition against the committed count, so two parallel requests
cannot both pass; on SQLite writers take turns anyway. Releasing a hold gives its units back.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict
from commerce.models import PurchaseCounterRow
from commerce.values import LimitScope

OVERALL = "overall"


def scope_key(limit_scope: LimitScope, show_id: int | None) -> str:
    """The counter a purchase counts against: the show's own for per-show limits, else the overall one.
    A per-show limit counts purchases made outside any show together."""
    if limit_scope == "show" and show_id is not None:
        return f"show:{show_id}"
    return OVERALL


async def take(session: AsyncSession, product_id: int, user_id: int, scope: str, units: int, limit: int) -> int:
    """Count `units` more against the buyer's limit and return the new count, or Conflict("limit_reached").

    One upsert: a first purchase inserts the count, later ones raise it only `WHERE units + q <= limit`.
    """
    refused = Conflict("limit_reached", f"you can buy at most {limit} of this product"
                       + (" in this show" if scope != OVERALL else ""), "quantity")
    if units > limit:
        raise refused
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(PurchaseCounterRow).values(product_id=product_id, user_id=user_id, scope=scope, units=units)
    statement = statement.on_conflict_do_update(
        index_elements=[PurchaseCounterRow.product_id, PurchaseCounterRow.user_id, PurchaseCounterRow.scope],
        set_={"units": PurchaseCounterRow.units + units}, where=PurchaseCounterRow.units + units <= limit)
    counted = (await session.execute(statement.returning(PurchaseCounterRow.units))).scalar_one_or_none()
    if counted is None:
        raise refused
    return int(counted)


async def give_back(session: AsyncSession, product_id: int, user_id: int, scope: str, units: int) -> None:
    """Uncount released units (a cancelled or expired hold, a refund)."""
    await session.execute(
        update(PurchaseCounterRow)
        .where(PurchaseCounterRow.product_id == product_id, PurchaseCounterRow.user_id == user_id,
               PurchaseCounterRow.scope == scope, PurchaseCounterRow.units >= units)
        .values(units=PurchaseCounterRow.units - units).execution_options(synchronize_session=False))
