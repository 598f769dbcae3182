"""Purchase limits: how many units of a product one buyer may hold or own, per show or overall.

The count lives in a counter row that only a conditional UPDATE raises (`units + q <= limit`), in the same
transaction as the hold it pays for. On PostgreSQL a second transaction of the same buyer waits for the
first's row lock and then re-evaluates the condition against the committed count, so two parallel requests
cannot both pass; on SQLite writers take turns anyway. Releasing a hold gives its units back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict
from commerce.models import PurchaseCounterRow
from commerce.values import LimitScope
from store.statements import PerDialect, bound, bound_values, table_of

OVERALL = "overall"

_COUNTERS = table_of(PurchaseCounterRow)


def _count_upsert(insert: Any) -> Any:
    """A first purchase inserts the count; later ones raise it only `WHERE units + q <= limit`."""
    statement = insert(_COUNTERS).values(bound_values(_COUNTERS, "product_id", "user_id", "scope", "units"))
    return statement.on_conflict_do_update(
        index_elements=[_COUNTERS.c.product_id, _COUNTERS.c.user_id, _COUNTERS.c.scope],
        set_={"units": _COUNTERS.c.units + bindparam("v_units")},
        where=_COUNTERS.c.units + bindparam("v_units") <= bindparam("limit")).returning(_COUNTERS.c.units)


_COUNT = PerDialect(_count_upsert)
_UNCOUNT = (update(_COUNTERS)
            .where(_COUNTERS.c.product_id == bindparam("product"), _COUNTERS.c.user_id == bindparam("user"),
                   _COUNTERS.c.scope == bindparam("counter"), _COUNTERS.c.units >= bindparam("units_back"))
            .values(units=_COUNTERS.c.units - bindparam("units_back")))


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
    counted = (await session.execute(_COUNT.of(session), {
        **bound({"product_id": product_id, "user_id": user_id, "scope": scope, "units": units}),
        "limit": limit})).scalar_one_or_none()
    if counted is None:
        raise refused
    return int(counted)


async def give_back(session: AsyncSession, product_id: int, user_id: int, scope: str, units: int) -> None:
    """Uncount released units (a cancelled or expired hold, a refund)."""
    await session.execute(_UNCOUNT, {"product": product_id, "user": user_id, "counter": scope, "units_back": units})
