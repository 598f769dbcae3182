"""Fast refusals when a product is sold out: per-process hints that can only ever say "no".

In a flash sale nearly every request is refused, and running each refusal through the database writer would
queue them all behind each other (on SQLite there is one writer). So each process remembers, per variant, how
many units its own committed transactions left free (every stock change: holds, cancels, expiries,
payments, restocks), or what a sold-out refusal read inside the writer, for `TTL_MS`. A request
whose hint says fewer units are free than it asks for is refused without touching the writer.

A hint never makes a hold: only the atomic UPDATE does. The worst a hint can do is refuse a buyer for about
`TTL_MS` (plus one write, while an outdated hint is renewed) after another node or process freed a unit;
the buyer's next try after that sees it. Changes made in this process update the hint when they commit.
Reserves of one product also take turns in-process: as many may be in the write path at once as units were
last seen free. A request arriving while those in the write path already claim every unit seen free is
refused at once as sold out (it could only win if one of them failed; its next try will see): waiting for
them would hold every such request for the length of the whole queue of hold transactions, which take
turns on the stock row. Only before any level is known does the line admit one at a time, the rest waiting
in arrival order until the first one's level is seen.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from store.database import Database, after_commit

TTL_MS = 500
PARK_LIMIT_S = 0.25
"""Longest a refusal waits for the SQLite writer to be idle before it is answered anyway."""
RELEASE_PER_TURN = 64
"""Parked refusals released per event-loop turn at most."""


@dataclass
class _Line:
    """Reserves of one product in this process: how many are in the write path, and who waits, in order."""

    inflight: int = 0
    waiting: deque[tuple[int | None, int, asyncio.Future[bool]]] = field(default_factory=deque)


class Availability:
    """The hints and gates of one database in this process."""

    def __init__(self, ttl_ms: int = TTL_MS) -> None:
        self.ttl_ms = ttl_ms
        self._busy = 0
        self._in_use = 0
        self._parked: deque[asyncio.Future[None]] = deque()
        self._releasing = False
        self._timer: asyncio.TimerHandle | None = None
        self._budget = 0
        self.release_per_turn = RELEASE_PER_TURN
        self.park_limit_s = PARK_LIMIT_S
        self._levels: dict[int, dict[int, tuple[int, float]]] = {}
        self._only_variant: dict[int, int] = {}
        self._lines: dict[int, _Line] = {}

    def _seen(self, product_id: int, variant_id: int | None) -> tuple[int, float] | None:
        chosen = self._only_variant.get(product_id) if variant_id is None else variant_id
        return None if chosen is None else self._levels.get(product_id, {}).get(chosen)

    def free(self, product_id: int, variant_id: int | None) -> int | None:
        """Units free as last seen by this process, if seen within the TTL; else None."""
        seen = self._seen(product_id, variant_id)
        if seen is None or (time.monotonic() - seen[1]) * 1000 > self.ttl_ms:
            return None
        return seen[0]

    def sold_out(self, product_id: int, variant_id: int | None, quantity: int) -> bool:
        """Whether to refuse without the writer: the last level seen has too few units, and it is either
        fresh or a reserve of the product is in the write path in this process and will see the row again
        (so an outdated hint is answered from while it is being renewed, instead of everyone queueing)."""
        seen = self._seen(product_id, variant_id)
        if seen is None or seen[0] >= quantity:
            return False
        fresh = (time.monotonic() - seen[1]) * 1000 <= self.ttl_ms
        line = self._lines.get(product_id)
        return fresh or (line is not None and line.inflight > 0)

    def note(self, product_id: int, variant_id: int, available: int, only_variant: bool = False) -> None:
        """Record a variant's free units as a committed transaction left them. `only_variant`: the product has
        this one variant, so requests that name none mean it."""
        self._levels.setdefault(product_id, {})[variant_id] = (available, time.monotonic())
        if only_variant:
            self._only_variant[product_id] = variant_id
        line = self._lines.get(product_id)
        if line is not None:
            self._admit(product_id, line)

    def note_read(self, product_id: int, levels: list[tuple[int, int]]) -> None:
        """Record a product's (variant, free units) as a read just saw them: buyers load a product before
        they reserve it, so a sale's first burst meets a known level (as wide a turn as there are units, and
        the rest refused at once) instead of one reserve at a time until the first commits."""
        for variant_id, available in levels:
            self.note(product_id, variant_id, available, only_variant=len(levels) == 1)

    def database_began(self, writer: bool) -> None:
        """A connection was checked out: `writer`, SQLite's one writer (refusals park), else any connection
        (refusals are only paced)."""
        self._in_use += 1
        self._busy += writer

    def database_ended(self, writer: bool) -> None:
        self._in_use = max(0, self._in_use - 1)
        self._busy = max(0, self._busy - writer)
        if not self._busy and self._parked:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._release_soon()

    async def refusal_turn(self) -> None:
        """Wait for this refusal's turn to be answered: at most `release_per_turn` refusals go out per
        event-loop turn, in arrival order, and none while this process's SQLite writer is in use unless they
        have waited `park_limit_s`. With no database work in flight and none parked, at once.

        Refusals answer from memory in microseconds, so a flood of them can fill every turn of the event
        loop, and each database statement (whose answer comes back through the loop: from SQLite's thread,
        from PostgreSQL's socket) then waits behind them: checkouts and payments would crawl, on SQLite while
        holding the single writer. Answering a bounded number per turn keeps every turn short; parking them
        while the SQLite writer is in use lets its transaction finish at full speed. The release stays paced
        when the writer comes free: released all at once, the parked refusals (and the requests their
        buyers send next) filled the turns of the next transaction, and a winner's checkout and payment
        took half a minute in a 2,000-buyer sale on SQLite (4 s paced; `bench/flash_sale.py`).
        """
        if not self._in_use and not self._parked:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._parked.append(future)
        if not self._busy:
            self._release_soon()
        elif self._timer is None and not self._releasing:
            self._timer = loop.call_later(self.park_limit_s, self._overdue)
        await future

    def _overdue(self) -> None:
        """The parked refusals have waited long enough: they go out (paced) even though the writer is busy."""
        self._timer = None
        self._budget = len(self._parked)
        self._release_soon()

    def _release_soon(self) -> None:
        if not self._releasing:
            self._releasing = True
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        released = 0
        limit = self.release_per_turn
        while self._parked and released < limit and (not self._busy or self._budget > 0):
            future = self._parked.popleft()
            self._budget = max(0, self._budget - 1)
            if not future.done():
                future.set_result(None)
                released += 1
        loop = asyncio.get_running_loop()
        if self._parked and (not self._busy or self._budget > 0):
            loop.call_soon(self._release)
            return
        self._releasing = False
        if self._parked and self._timer is None:
            self._timer = loop.call_later(self.park_limit_s, self._overdue)

    def _width(self, product_id: int, variant_id: int | None) -> int | None:
        """How many reserves may be in the write path at once: as many as units were last seen free (they can
        all succeed), at least one (to renew the hint); None while no level has been seen (one at a time)."""
        seen = self._seen(product_id, variant_id)
        return None if seen is None else max(1, seen[0])

    @asynccontextmanager
    async def turn(self, product_id: int, variant_id: int | None, quantity: int) -> AsyncIterator[bool]:
        """Take a turn in the write path; yields False when the reserves in it already claim every unit seen
        free (then it is refused without a write). Before any level is seen, waits in arrival order."""
        line = self._lines.setdefault(product_id, _Line())
        width = self._width(product_id, variant_id)
        known = width is not None
        admitted = (known or not line.waiting) and line.inflight < (width or 1)
        if admitted:
            line.inflight += 1
        elif not known:  # a known level with every unit claimed is refused now; an unknown one waits
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            line.waiting.append((variant_id, quantity, future))
            try:
                admitted = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.result():
                    self._leave(product_id)
                raise
        try:
            yield admitted
        finally:
            if admitted:
                self._leave(product_id)
            elif self._lines.get(product_id) is line and not line.inflight and not line.waiting:
                del self._lines[product_id]

    def _leave(self, product_id: int) -> None:
        line = self._lines[product_id]
        line.inflight -= 1
        self._admit(product_id, line)
        if not line.inflight and not line.waiting:
            del self._lines[product_id]

    def _admit(self, product_id: int, line: _Line) -> None:
        """Let waiters in, in order, while there is width; once a level is known, refuse the rest at once."""
        kept: deque[tuple[int | None, int, asyncio.Future[bool]]] = deque()
        for variant_id, quantity, future in line.waiting:
            if future.done():
                continue
            width = self._width(product_id, variant_id)
            if self.sold_out(product_id, variant_id, quantity):
                future.set_result(False)
            elif not kept and line.inflight < (width or 1):
                line.inflight += 1
                future.set_result(True)
            elif width is not None:
                future.set_result(False)
            else:
                kept.append((variant_id, quantity, future))
        line.waiting = kept


_registry: weakref.WeakKeyDictionary[Engine, Availability] = weakref.WeakKeyDictionary()


def for_database(db: Database) -> Availability:
    """The hints of `db` in this process, created on first use.

    Check-outs of its connections are counted for `refusal_turn` (pool check-outs and check-ins always pair
    up, whatever happens to a transaction). On SQLite that is the one writer connection, for which refusals
    park; reads are not counted (they do not hold up the writer, and counting them let every batch of
    idempotency-key reads park all other refusals). On PostgreSQL, any connection: refusals are paced
    while statements are in flight, never parked (parking them while any write transaction ran, tried,
    answered fewer in all: writes are nearly always in flight during a sale).
    """
    engine = db.writer.sync_engine
    found = _registry.get(engine)
    if found is None:
        found = _registry[engine] = Availability()
        hints, writer = found, db.is_sqlite
        event.listen(engine, "checkout", lambda *_args: hints.database_began(writer))
        event.listen(engine, "checkin", lambda *_args: hints.database_ended(writer))
    return found


def _of(session: AsyncSession) -> Availability | None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    return _registry.get(engine)


def note_after_commit(session: AsyncSession, product_id: int, variant_id: int, available: int, *,
                      only_variant: bool = False) -> None:
    """Record what this transaction left free, once it has committed (never on rollback)."""
    hints = _of(session)
    if hints is not None:
        after_commit(session, functools.partial(hints.note, product_id, variant_id, available, only_variant))


def note_now(session: AsyncSession, product_id: int, variant_id: int, available: int, *,
             only_variant: bool = False) -> None:
    """Record what the writer read just now, whatever becomes of its transaction (a sold-out refusal rolls
    back, but what it read inside the writer was true)."""
    hints = _of(session)
    if hints is not None:
        hints.note(product_id, variant_id, available, only_variant)
