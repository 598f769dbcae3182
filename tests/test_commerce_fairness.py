"""Flash sales, the FIFO admission queue and the lottery on SQLite and PostgreSQL: deadlines instead of
durations, refusals before and after the window, queue order and tokens, reproducible draws."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import select

from accounts.errors import Conflict, DomainError
from accounts.user import User
from commerce import admission, flash_sales, inventory
from commerce.errors import DetailedConflict
from commerce.jobs import HANDLERS
from commerce.models import AdmissionEntryRow
from commerce.values import Hold, Ticket
from config.schema import DatabaseSettings, JobsSettings
from store import Database, JobRunner, now_ms
from tests.commerce_helpers import product, users

pytestmark = pytest.mark.timeout(120)
HOLD_SECONDS = 300
MINUTE = 60_000


async def reserve(db: Database, buyer: User, product_id: int, *, token: str | None = None,
                  at: int | None = None) -> Hold | DomainError:
    try:
        async with db.write() as session:
            return await inventory.reserve(session, buyer, product_id, hold_seconds=HOLD_SECONDS, queue_token=token,
                                           now_ms=at)
    except DomainError as error:
        return error


async def put_on_sale(db: Database, host: User, product_id: int, *, starts_at: int | None = None,
                      ends_at: int | None = None, admission: str = "open", queue_factor: int = 2,
                      token_seconds: int = 120) -> int:
    now = now_ms()
    async with db.write() as session:
        sale = await flash_sales.set_sale(
            session, host, product_id, price_minor=999, starts_at=now if starts_at is None else starts_at,
            ends_at=now + 10 * MINUTE if ends_at is None else ends_at, admission=admission,
            queue_factor=queue_factor, token_seconds=token_seconds, now_ms=now)
    return sale.id


async def join(db: Database, sale_id: int, buyer: User, at: int | None = None) -> Ticket:
    async with db.write() as session:
        return await admission.join(session, sale_id, buyer, now_ms=at)


async def ticket(db: Database, sale_id: int, buyer: User, at: int | None = None) -> Ticket:
    async with db.write() as session:
        return await admission.ticket(session, sale_id, buyer.id, now_ms=at)


async def test_a_flash_sale_opens_and_closes_on_server_time(db: Database) -> None:
    host, buyer = await users(db, 1, "host") + await users(db, 1)
    item = await product(db, host, stock=5, price_minor=5000)
    now = now_ms()
    async with db.write() as session:
        await flash_sales.set_sale(session, host, item.id, price_minor=2999, starts_at=now + MINUTE,
                                   ends_at=now + 2 * MINUTE, now_ms=now)
    early = await reserve(db, buyer, item.id)
    assert isinstance(early, DetailedConflict) and early.code == "sale_not_started"
    assert early.details["starts_at"] == now + MINUTE and isinstance(early.details["server_time"], int)
    during = await reserve(db, buyer, item.id, at=now + MINUTE)
    assert isinstance(during, Hold) and during.unit_price.amount_minor == 2999
    late = await reserve(db, buyer, item.id, at=now + 2 * MINUTE)
    assert isinstance(late, DetailedConflict) and late.code == "sale_ended"
    assert late.details["ends_at"] == now + 2 * MINUTE

    async with db.write() as session:
        changed = await flash_sales.set_sale(session, host, item.id, price_minor=1999, starts_at=now + MINUTE,
                                             ends_at=now + 3 * MINUTE, now_ms=now)
        assert changed.price.amount_minor == 1999 and changed.price.currency == "USD"
    async with db.write() as session:
        with pytest.raises(Conflict) as started:
            await flash_sales.set_sale(session, host, item.id, price_minor=1, starts_at=now + 2 * MINUTE,
                                       ends_at=now + 4 * MINUTE, now_ms=now + MINUTE)
        assert started.value.code == "sale_already_started"
    async with db.write() as session:
        with pytest.raises(DomainError) as invalid:
            await flash_sales.set_sale(session, host, item.id, price_minor=1, starts_at=now, ends_at=now - 1)
        assert invalid.value.code == "invalid_window"
    async with db.write() as session:
        await flash_sales.end_sale_now(session, host, item.id, now_ms=now)
    regular = await reserve(db, buyer, item.id)  # no sale any more: the normal price
    assert isinstance(regular, Hold) and regular.unit_price.amount_minor == 5000


async def test_the_queue_admits_in_join_order_as_units_free_up(db: Database) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 8)
    item = await product(db, host, stock=3)
    sale_id = await put_on_sale(db, host, item.id, admission="queue", queue_factor=1, token_seconds=30)
    tickets = [await join(db, sale_id, buyer) for buyer in buyers]
    assert [t.status for t in tickets] == ["admitted"] * 3 + ["waiting"] * 5
    assert [t.position for t in tickets[3:]] == [1, 2, 3, 4, 5]
    assert all(t.token and t.token_expires_at for t in tickets[:3])
    assert await join(db, sale_id, buyers[5]) == await ticket(db, sale_id, buyers[5])  # joining again: same place

    refused = await reserve(db, buyers[4], item.id)
    assert isinstance(refused, DetailedConflict) and refused.code == "queue_token_required"
    assert refused.details["position"] == 2
    stolen = await reserve(db, buyers[4], item.id, token=tickets[0].token)
    assert isinstance(stolen, DetailedConflict) and stolen.code == "queue_token_required"
    first = await reserve(db, buyers[0], item.id, token=tickets[0].token)
    assert isinstance(first, Hold)
    reused = await reserve(db, buyers[0], item.id, token=tickets[0].token)
    assert isinstance(reused, DetailedConflict) and reused.code == "queue_token_required"

    # Two units are free and two tokens live: nobody else gets in until a unit comes back.
    assert (await ticket(db, sale_id, buyers[3])).status == "waiting"
    async with db.write() as session:
        await inventory.cancel_hold(session, buyers[0], first.id)
    assert (await ticket(db, sale_id, buyers[4])).position == 1  # any poll moves the line: #3 is in
    admitted = await ticket(db, sale_id, buyers[3])
    assert admitted.status == "admitted" and admitted.token is not None
    assert isinstance(await reserve(db, buyers[3], item.id, token=admitted.token), Hold)

    # Unused tokens lapse and pass the turn on, in order.
    later = now_ms() + 31_000
    assert (await ticket(db, sale_id, buyers[4], at=later)).status == "admitted"
    assert (await ticket(db, sale_id, buyers[1], at=later)).status == "expired"
    assert (await ticket(db, sale_id, buyers[6], at=later)).status == "waiting"
    assert (await ticket(db, sale_id, buyers[5], at=later)).status == "admitted"


async def test_the_factor_lets_demand_within_it_straight_through(db: Database) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 7)
    item = await product(db, host, stock=3)
    sale_id = await put_on_sale(db, host, item.id, admission="queue", queue_factor=2)
    statuses = [(await join(db, sale_id, buyer)).status for buyer in buyers]
    assert statuses == ["admitted"] * 6 + ["waiting"]


async def test_hundreds_join_at_once_and_get_a_consistent_line(db: Database, database_url: str) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 200)
    item = await product(db, host, stock=10)
    sale_id = await put_on_sale(db, host, item.id, admission="queue", queue_factor=2)
    nodes = [db] + [Database(DatabaseSettings(url=database_url)) for _ in range(2)]
    try:
        tickets = await asyncio.gather(*(join(nodes[index % 3], sale_id, buyer)
                                         for index, buyer in enumerate(buyers)))
    finally:
        for node in nodes[1:]:
            await node.close()
    assert sum(t.status == "admitted" for t in tickets) == 20
    # However the joins interleaved, the admitted are the first 20 by entry order and positions follow it.
    final = [await ticket(db, sale_id, buyer) for buyer in buyers]
    ordered = sorted(final, key=lambda t: t.entry_id)
    assert [t.status for t in ordered] == ["admitted"] * 20 + ["waiting"] * 180
    assert [t.position for t in ordered[20:]] == list(range(1, 181))
    winners = [t for t in final if t.token]
    results = await asyncio.gather(*(reserve(db, next(b for b in buyers if b.id == t.user_id), item.id,
                                             token=t.token) for t in winners))
    assert sum(isinstance(result, Hold) for result in results) == 10
    assert {result.code for result in results if isinstance(result, DomainError)} == {"sold_out"}


async def test_a_lottery_draw_is_reproducible_from_its_seed(db: Database) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 12)
    item = await product(db, host, stock=4)
    now = now_ms()
    sale_id = await put_on_sale(db, host, item.id, admission="lottery", starts_at=now + MINUTE,
                                ends_at=now + 2 * MINUTE)
    early = await reserve(db, buyers[0], item.id, at=now + MINUTE)
    assert isinstance(early, DetailedConflict) and early.code == "sale_not_started"
    assert early.details["starts_at"] == now + 2 * MINUTE
    with pytest.raises(DetailedConflict) as not_yet:
        await join(db, sale_id, buyers[0], at=now)
    assert not_yet.value.code == "sale_not_started"
    async with db.read() as session:
        before = await flash_sales.get_sale(session, sale_id)
    assert before.seed is None and before.seed_hash is not None and len(before.seed_hash) == 64  # committed
    for buyer in buyers:
        entered = await join(db, sale_id, buyer, at=now + MINUTE)
        assert entered.status == "waiting" and entered.position is None and entered.rank is None

    async with db.write() as session:
        seed = await admission.draw(session, sale_id, now_ms=now + 2 * MINUTE)
    assert hashlib.sha256(seed.encode()).hexdigest() == before.seed_hash  # revealed: the seed committed to
    async with db.read() as session:
        entries = (await session.execute(select(AdmissionEntryRow.id, AdmissionEntryRow.rank, AdmissionEntryRow.status)
                                         .where(AdmissionEntryRow.sale_id == sale_id))).all()
        sale = await flash_sales.get_sale(session, sale_id)
    assert sale.seed == seed and sale.seed_hash == before.seed_hash and sale.drawn_at == now + 2 * MINUTE
    by_rank = [entry.id for entry in sorted(entries, key=lambda entry: entry.rank)]
    assert by_rank == admission.draw_order(seed, [entry.id for entry in entries])
    assert {entry.id for entry in entries if entry.status == "admitted"} == set(by_rank[:4])
    async with db.write() as session:
        assert await admission.draw(session, sale_id) == seed  # drawn once
    with pytest.raises(DetailedConflict) as closed:
        await join(db, sale_id, (await users(db, 1))[0], at=now + 2 * MINUTE)
    assert closed.value.code == "sale_ended"

    tickets = {t.user_id: t for t in [await ticket(db, sale_id, buyer, at=now + 2 * MINUTE) for buyer in buyers]}
    winners = [buyer for buyer in buyers if tickets[buyer.id].token]
    loser = next(buyer for buyer in buyers if not tickets[buyer.id].token)
    assert len(winners) == 4 and tickets[loser.id].position is not None
    refused = await reserve(db, loser, item.id, at=now + 2 * MINUTE)
    assert isinstance(refused, DetailedConflict) and refused.code == "queue_token_required"
    for winner in winners:
        assert isinstance(await reserve(db, winner, item.id, token=tickets[winner.id].token,
                                        at=now + 2 * MINUTE), Hold)


async def test_the_draw_runs_as_a_durable_job_at_the_end_of_entries(db: Database) -> None:
    host, = await users(db, 1, "host")
    buyers = await users(db, 5)
    item = await product(db, host, stock=2)
    now = now_ms()
    sale_id = await put_on_sale(db, host, item.id, admission="lottery", starts_at=now - MINUTE, ends_at=now + 800)
    for buyer in buyers:
        await join(db, sale_id, buyer)
    await asyncio.sleep(0.9)
    assert await JobRunner(db, HANDLERS, JobsSettings()).run_once() == 1
    async with db.read() as session:
        sale = await flash_sales.get_sale(session, sale_id)
        entry_ids = (await session.execute(select(AdmissionEntryRow.id).where(AdmissionEntryRow.sale_id == sale_id)
                                           .order_by(AdmissionEntryRow.rank))).scalars().all()
    assert sale.seed is not None and len(sale.seed) == 32
    assert list(entry_ids) == admission.draw_order(sale.seed, entry_ids)
    assert sum([(await ticket(db, sale_id, buyer)).status == "admitted" for buyer in buyers]) == 2


async def test_a_sale_quantity_is_never_oversold_and_unpaid_holds_give_units_back(db: Database,
                                                                                database_url: str) -> None:
    """A sale offering 5 of 50 units: 60 parallel buyers on three connections get exactly 5 holds at the sale
    price; a cancelled one frees its unit for the sale again; the stock keeps the other units."""
    host, = await users(db, 1, "host")
    buyers = await users(db, 60)
    item = await product(db, host, stock=50)
    now = now_ms()
    async with db.write() as session:
        sale = await flash_sales.set_sale(session, host, item.id, price_minor=999, starts_at=now,
                                          ends_at=now + 10 * MINUTE, quantity=5, now_ms=now)
    nodes = [db] + [Database(DatabaseSettings(url=database_url)) for _ in range(2)]
    try:
        results = await asyncio.gather(*(reserve(nodes[index % 3], buyer, item.id)
                                         for index, buyer in enumerate(buyers)))
    finally:
        for node in nodes[1:]:
            await node.close()
    holds = [result for result in results if isinstance(result, Hold)]
    assert len(holds) == 5 and {hold.unit_price.amount_minor for hold in holds} == {999}
    assert {result.code for result in results if isinstance(result, DomainError)} == {"sale_sold_out"}
    async with db.read() as session:
        assert (await flash_sales.get_sale(session, sale.id)).taken == 5
    async with db.write() as session:
        await inventory.cancel_hold(session, next(b for b in buyers if b.id == holds[0].user_id), holds[0].id)
    late = [buyer for buyer in buyers if buyer.id not in {hold.user_id for hold in holds}]
    again = await reserve(db, late[0], item.id)
    assert isinstance(again, Hold) and again.unit_price.amount_minor == 999
    assert isinstance(refused := await reserve(db, late[1], item.id), Conflict) and refused.code == "sale_sold_out"
    async with db.write() as session:
        with pytest.raises(DomainError) as invalid:
            await flash_sales.set_sale(session, host, (await product(db, host, stock=1)).id, price_minor=1,
                                       starts_at=now, ends_at=now + MINUTE, quantity=0, now_ms=now)
    assert invalid.value.code == "invalid_quantity"
