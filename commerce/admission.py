"""Admission to hot items: a FIFO queue with time-boxed purchase tokens, or a lottery with a recorded seed.

Both live in the database (one row per buyer and sale), so they hold on SQLite and PostgreSQL and across
nodes. An admission pass keeps at most `capacity` tokens live: `queue_factor` times the units still free for a
queue, the free units for a lottery. So while demand stays within factor times stock nobody waits, and once it
outruns that, buyers wait in line and are admitted in turn as tokens are used, expire or stock comes back.
Passes lock the sale row, so concurrent passes on PostgreSQL take turns instead of over-admitting.

Queue: entries are served in the order they joined (entry id). Lottery: entries are accepted between
`starts_at` and `ends_at`; at `ends_at` a durable job draws a random seed, records it on the sale, and ranks
every entry by SHA-256(seed ":" entry id). Anyone holding the seed and the entry ids can recompute that
order (`draw_order`). Winners are the best ranks up to the free units; an unused token passes to the next
rank. A token is single-use: reserving with it consumes it in the reserving transaction (and a refused
reserve rolls that back, so the buyer keeps it until it expires).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.errors import Conflict, Forbidden, NotFound
from accounts.user import User
from commerce.errors import DetailedConflict
from commerce.flash_sales import get_sale, not_started
from commerce.models import AdmissionEntryRow, FlashSaleRow, VariantRow
from commerce.values import FlashSale, Ticket
from store import clock


def draw_order(seed: str, entry_ids: Iterable[int]) -> list[int]:
    """Entry ids best rank first: ascending SHA-256 of "{seed}:{entry_id}" (ties, impossible in practice, by id).
    A pure function of the recorded seed and the entries, so a draw can be audited by recomputing it."""
    return sorted(entry_ids, key=lambda entry_id: (hashlib.sha256(f"{seed}:{entry_id}".encode()).hexdigest(),
                                                   entry_id))


async def _free_units(session: AsyncSession, product_id: int) -> int:
    total = await session.scalar(select(func.coalesce(func.sum(VariantRow.available), 0))
                                 .where(VariantRow.product_id == product_id))
    return int(total or 0)


async def _lock_sale(session: AsyncSession, sale_id: int) -> FlashSaleRow:
    """Lock the sale row for this transaction. NO KEY UPDATE, because inserting an entry takes a KEY SHARE
    lock on it (the foreign key): FOR UPDATE would deadlock two joins that both inserted first."""
    row = (await session.execute(select(FlashSaleRow).where(FlashSaleRow.id == sale_id)
                                 .with_for_update(key_share=True)
                                 .execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        raise NotFound("sale_not_found", "no such flash sale")
    return row


async def admit(session: AsyncSession, sale_id: int, *, now_ms: int | None = None) -> int:
    """One admission pass: expire lapsed tokens, then hand tokens to the next waiting buyers up to the
    capacity. Returns how many were admitted."""
    now = clock.now_ms() if now_ms is None else now_ms
    sale = await _lock_sale(session, sale_id)
    if sale.admission == "open" or (sale.admission == "lottery" and sale.drawn_at is None):
        return 0
    await session.execute(update(AdmissionEntryRow)
                          .where(AdmissionEntryRow.sale_id == sale.id, AdmissionEntryRow.status == "admitted",
                                 AdmissionEntryRow.token_expires_at <= now)
                          .values(status="expired").execution_options(synchronize_session=False))
    live = int(await session.scalar(select(func.count()).select_from(AdmissionEntryRow).where(
        AdmissionEntryRow.sale_id == sale.id, AdmissionEntryRow.status == "admitted")) or 0)
    free = await _free_units(session, sale.product_id)
    capacity = free * (sale.queue_factor if sale.admission == "queue" else 1)
    if capacity <= live:
        return 0
    order = AdmissionEntryRow.id if sale.admission == "queue" else AdmissionEntryRow.rank
    waiting = (await session.execute(
        select(AdmissionEntryRow.id).where(AdmissionEntryRow.sale_id == sale.id,
                                           AdmissionEntryRow.status == "waiting")
        .order_by(order, AdmissionEntryRow.id).limit(capacity - live))).scalars().all()
    for entry_id in waiting:
        await session.execute(update(AdmissionEntryRow)
                              .where(AdmissionEntryRow.id == entry_id, AdmissionEntryRow.status == "waiting")
                              .values(status="admitted", token=secrets.token_urlsafe(24), admitted_at=now,
                                      token_expires_at=now + sale.token_seconds * 1000)
                              .execution_options(synchronize_session=False))
    return len(waiting)


async def _entry(session: AsyncSession, sale_id: int, user_id: int) -> AdmissionEntryRow | None:
    return (await session.execute(select(AdmissionEntryRow).where(AdmissionEntryRow.sale_id == sale_id,
                                                                  AdmissionEntryRow.user_id == user_id)
                                  .execution_options(populate_existing=True))).scalar_one_or_none()


async def _position(session: AsyncSession, sale: FlashSale, entry: AdmissionEntryRow) -> int | None:
    if entry.status != "waiting" or (sale.admission == "lottery" and entry.rank is None):
        return None
    ahead = AdmissionEntryRow.id < entry.id if sale.admission == "queue" else AdmissionEntryRow.rank < entry.rank
    count = await session.scalar(select(func.count()).select_from(AdmissionEntryRow).where(
        AdmissionEntryRow.sale_id == sale.id, AdmissionEntryRow.status == "waiting", ahead))
    return int(count or 0) + 1


async def join(session: AsyncSession, sale_id: int, buyer: User, *, now_ms: int | None = None) -> Ticket:
    """Enter the queue or the lottery (idempotent: joining again returns the same place).

    Queue: while the sale runs ("sale_not_started" / "sale_ended" otherwise); the answer may already carry a
    token. Lottery: between `starts_at` and `ends_at`; the rank and any token come with the draw.
    """
    if buyer.disabled:
        raise Forbidden("account_disabled", "the account is disabled")
    now = clock.now_ms() if now_ms is None else now_ms
    await _lock_sale(session, sale_id)
    sale = await get_sale(session, sale_id)
    if sale.admission == "open":
        raise Conflict("no_admission", "this sale has no queue or lottery; reserve directly")
    existing = await _entry(session, sale.id, buyer.id)
    if existing is None:
        if now < sale.starts_at:
            raise not_started(sale.starts_at, now, "entries open")
        if now >= sale.ends_at or sale.drawn_at is not None:
            raise DetailedConflict("sale_ended", "entries are closed" if sale.admission == "lottery"
                                   else "the sale has ended", {"ends_at": sale.ends_at, "server_time": now})
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        await session.execute(insert(AdmissionEntryRow)
                              .values(sale_id=sale.id, user_id=buyer.id, status="waiting", joined_at=now)
                              .on_conflict_do_nothing(index_elements=[AdmissionEntryRow.sale_id,
                                                                      AdmissionEntryRow.user_id]))
    return await ticket(session, sale.id, buyer.id, now_ms=now)


async def ticket(session: AsyncSession, sale_id: int, user_id: int, *, now_ms: int | None = None) -> Ticket:
    """The buyer's place after an admission pass (so polling it is what moves the line along)."""
    now = clock.now_ms() if now_ms is None else now_ms
    sale = await get_sale(session, sale_id)
    await admit(session, sale.id, now_ms=now)
    entry = await _entry(session, sale.id, user_id)
    if entry is None:
        raise NotFound("not_in_queue", "you have not joined this sale's queue or lottery")
    return Ticket.from_row(entry, await _position(session, sale, entry))


async def use_token(session: AsyncSession, sale: FlashSale, user_id: int, token: str | None, now: int) -> None:
    """Consume the buyer's live purchase token in the caller's transaction, or Conflict("queue_token_required")
    with the buyer's position (None if they never joined)."""
    if token:
        used = (await session.execute(
            update(AdmissionEntryRow)
            .where(AdmissionEntryRow.sale_id == sale.id, AdmissionEntryRow.user_id == user_id,
                   AdmissionEntryRow.status == "admitted", AdmissionEntryRow.token == token,
                   AdmissionEntryRow.token_expires_at > now)
            .values(status="used", used_at=now).returning(AdmissionEntryRow.id)
            .execution_options(synchronize_session=False))).first()
        if used is not None:
            return
    entry = await _entry(session, sale.id, user_id)
    position = None if entry is None else await _position(session, sale, entry)
    what = "lottery" if sale.admission == "lottery" else "queue"
    raise DetailedConflict("queue_token_required", f"this item is sold through a {what}: join it and reserve "
                           "with the purchase token you are given in turn",
                           {"sale_id": sale.id, "position": position, "server_time": now}, "queue_token")


async def draw(session: AsyncSession, sale_id: int, *, now_ms: int | None = None) -> str:
    """Draw a lottery (the job at `ends_at` does this): rank the entries by the seed committed when the sale
    was set (its SHA-256 published since), reveal it, admit the winners. Drawing again returns the seed and
    changes nothing."""
    now = clock.now_ms() if now_ms is None else now_ms
    sale = await _lock_sale(session, sale_id)
    if sale.admission != "lottery":
        raise Conflict("not_a_lottery", "only lotteries are drawn")
    if sale.drawn_at is not None and sale.seed is not None:
        return sale.seed
    chosen = sale.seed if sale.seed is not None else secrets.token_hex(16)  # (sales set before commit-reveal)
    entry_ids = (await session.execute(select(AdmissionEntryRow.id)
                                       .where(AdmissionEntryRow.sale_id == sale.id))).scalars().all()
    for rank, entry_id in enumerate(draw_order(chosen, entry_ids), start=1):
        await session.execute(update(AdmissionEntryRow).where(AdmissionEntryRow.id == entry_id)
                              .values(rank=rank).execution_options(synchronize_session=False))
    sale.seed, sale.drawn_at = chosen, now
    await session.flush()
    await admit(session, sale.id, now_ms=now)
    return chosen
