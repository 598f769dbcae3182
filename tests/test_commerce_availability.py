"""The in-process sold-out hints and turns: they refuse only what the last seen level refuses, let as many
reserves into the write path as units were seen free, in arrival order, and answer waiters at once when the
stock runs out."""

from __future__ import annotations

import asyncio

from commerce.availability import Availability


async def test_hints_expire_and_only_ever_refuse() -> None:
    hints = Availability(ttl_ms=50)
    assert hints.free(1, None) is None and not hints.sold_out(1, None, 1)
    hints.note(1, 10, 0, only_variant=True)
    assert hints.free(1, None) == 0 and hints.sold_out(1, None, 1) and hints.sold_out(1, 10, 1)
    assert not hints.sold_out(1, 11, 1)  # another variant: nothing known
    hints.note(1, 10, 2)
    assert not hints.sold_out(1, None, 2) and hints.sold_out(1, None, 3)
    hints.note(1, 10, 0)
    await asyncio.sleep(0.06)
    assert hints.free(1, None) is None and not hints.sold_out(1, None, 1)  # stale: ask the database


async def test_turns_are_as_wide_as_the_free_units_and_refuse_once_every_unit_is_claimed() -> None:
    hints = Availability()
    order: list[str] = []
    release = asyncio.Event()

    async def reserve(name: str) -> bool:
        async with hints.turn(1, None, 1) as admitted:
            order.append(f"{name}:{admitted}")
            if admitted:
                await release.wait()
        return admitted

    # Nothing known: one at a time, the others wait in arrival order.
    tasks = [asyncio.create_task(reserve(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    assert order == ["a:True"]
    # Two free: b joins a; c could only win if one of them failed, so it is answered at once.
    hints.note(1, 10, 2, only_variant=True)
    await asyncio.sleep(0.01)
    assert order == ["a:True", "b:True", "c:False"]
    assert not await reserve("d")  # a newcomer too, without waiting
    release.set()
    assert await asyncio.gather(*tasks) == [True, True, False]
    assert not hints._lines
    release.clear()
    # With the units no longer claimed, the next ones are admitted again, as wide as the level.
    hints.note(1, 10, 1)
    first = asyncio.create_task(reserve("e"))
    await asyncio.sleep(0.01)
    assert order[-1] == "e:True" and not await reserve("f")
    release.set()
    assert await first and not hints._lines


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    hints = Availability()
    release = asyncio.Event()

    async def hold() -> None:
        async with hints.turn(1, None, 1) as admitted:
            assert admitted
            await release.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.sleep(0.01)
    release.set()
    await first
    assert waiter.cancelled() and not hints._lines


async def _answered_per_turn(hints: Availability, waiters: list[asyncio.Task[None]], turns: int) -> list[int]:
    """How many of `waiters` are done after each of `turns` event-loop turns."""
    counts = []
    for _ in range(turns):
        await asyncio.sleep(0)
        counts.append(sum(waiter.done() for waiter in waiters))
    return counts


async def test_refusals_are_answered_a_bounded_number_per_loop_turn_in_order() -> None:
    hints = Availability()
    hints.release_per_turn = 10
    hints.database_began(writer=False)  # statements in flight: refusals are paced
    order: list[int] = []

    async def refuse(index: int) -> None:
        await hints.refusal_turn()
        order.append(index)

    waiters = [asyncio.create_task(refuse(index)) for index in range(35)]
    counts = await _answered_per_turn(hints, waiters, 12)
    assert all(later - earlier <= 10 for earlier, later in zip([0, *counts], counts, strict=False))
    assert counts[-1] == 35 and order == list(range(35))
    hints.database_ended(writer=False)
    await asyncio.wait_for(hints.refusal_turn(), 0.1)  # nothing in flight: answered at once


async def test_refusals_wait_for_the_sqlite_writer_but_not_for_long() -> None:
    hints = Availability()
    hints.park_limit_s = 0.2
    hints.database_began(writer=True)  # a write transaction holds the writer
    parked = [asyncio.create_task(hints.refusal_turn()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in parked)
    hints.database_ended(writer=True)  # the writer is free: they go out at once
    await asyncio.wait_for(asyncio.gather(*parked), 1)

    hints.database_began(writer=True)  # a writer that stays busy: the refusals still go out after park_limit_s
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(asyncio.gather(*(hints.refusal_turn() for _ in range(5))), 1)
    assert 0.15 <= asyncio.get_running_loop().time() - started < 0.5
    hints.database_ended(writer=True)


async def test_a_product_read_primes_the_turn_width() -> None:
    """Buyers load the product before a sale opens: its first burst then meets a known level."""
    hints = Availability()
    hints.note_read(1, [(10, 3)])  # one variant: requests that name none mean it
    assert hints.free(1, None) == 3
    release = asyncio.Event()

    async def reserve() -> bool:
        async with hints.turn(1, None, 1) as admitted:
            if admitted:
                await release.wait()
        return admitted

    burst = [asyncio.create_task(reserve()) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*burst) == [True, True, True, False, False]
    hints.note_read(2, [(20, 0), (21, 4)])  # several variants: each by its id
    assert hints.free(2, None) is None and hints.sold_out(2, 20, 1) and hints.free(2, 21) == 4
