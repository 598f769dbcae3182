"""Flash-sale benchmark: thousands of buyers race over loopback HTTP for a few units on a real server.

    python bench/flash_sale.py [--buyers 2000] [--units 50] [--backend sqlite|postgres] [--clients 2]

Starts `run_server.py` on 127.0.0.1 with a temporary config and database (for postgres, a throwaway cluster
on a free loopback port), seeds one host, the buyers and one product with `--units` units (one per buyer),
then runs two phases with the same client processes and connections:

1. trivial: every buyer hammers `GET /healthz` for `--trivial-seconds` (the server's trivial capacity);
2. race: every buyer reserves (a fresh Idempotency-Key per attempt unless `--no-keys`; a network error
   retries the same key) until they win, the units are all sold, or `--timeout` passes. A refused buyer
   tries again after 0-50 ms (hammering, as bots do), or with `--polite` after the `retry_after_ms` the
   refusal suggests. A `429 rate_limited` (the per-account reserve limit) is waited out as its Retry-After
   says. Every fifth buyer who wins abandons the hold (cancels it), so freed units must reach buyers still
   trying; the other winners check out and pay with the test card.

The last line printed is one JSON object: oversold (units sold beyond the stock), unsold_with_demand (units
not sold although buyers were still trying), reserve_rps (reserve answers, held or refused, per second of
the race), trivial_rps, p99_ms (reserve latency) and the details behind them: purchase_p50_ms/p99_ms (a
paying winner's checkout and payment, from the hold's answer to the payment's) and server_cpu (the server
process's CPU per trivial request and per reserve answered, the winners' purchases included).
FLASH_SALE_TRACE=1 prints the stock every 100 ms of the race on stderr.

`--units 0 --timeout 8` is the control run: nothing is ever for sale, every reserve is a sold-out refusal
for the whole `--timeout`, so it measures the refusal path alone, without the winners' purchases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

CARD = "4242 4242 4242 4242"
ADDRESS = {"name": "Bench Buyer", "line1": "1 Loopback Lane", "city": "Localhost", "postal_code": "12700",
           "country": "US"}
RETRY_JITTER_S = 0.05
RESERVE_BODY = json.dumps({"quantity": 1}).encode()
RESERVE_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Shared:
    """What the coordinator and the client processes share."""

    url: str
    product_id: int
    trivial_start: Event
    trivial_stop: Event
    race_start: Event
    race_stop: Event
    keys: bool
    """Send an Idempotency-Key with every reserve attempt (a client's natural retry-safe behaviour)."""
    polite: bool
    """After a refusal wait the `retry_after_ms` the server suggests, instead of 0-50 ms."""


@dataclass
class WorkerResult:
    trivial: int = 0
    trivial_errors: int = 0
    attempts: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Per buyer: bought, abandoned, or still_wanting."""
    answers: Counter[str] = field(default_factory=Counter)
    """Per reserve answer: held, sold_out, or another status/code."""
    errors: int = 0
    paid_units: int = 0
    purchase_ms: list[float] = field(default_factory=list)
    """Per paying winner: from the hold's answer to the payment's (checkout and pay)."""
    race_first: float = 0.0
    race_last: float = 0.0


async def _hammer(http: aiohttp.ClientSession, shared: Shared, result: WorkerResult) -> None:
    while not shared.trivial_stop.is_set():
        try:
            async with http.get(f"{shared.url}/healthz") as response:
                await response.read()
                if response.status == 200:
                    result.trivial += 1
                else:
                    result.trivial_errors += 1
        except aiohttp.ClientError:
            result.trivial_errors += 1


async def _buy(http: aiohttp.ClientSession, shared: Shared, result: WorkerResult, index: int, token: str,
               rng: random.Random) -> str:
    auth = {"Authorization": f"Bearer {token}"}
    reserve_headers = {**auth, **RESERVE_HEADERS}
    reserve_url = f"{shared.url}/api/products/{shared.product_id}/reserve"
    key = uuid.uuid4().hex
    while not shared.race_stop.is_set():
        started = time.perf_counter()
        try:
            # The body is encoded once and the answer parsed directly: the load generators share the machine
            # with the server, so every microsecond they spend is one the server does not get.
            headers = {**reserve_headers, "Idempotency-Key": key} if shared.keys else reserve_headers
            async with http.post(reserve_url, data=RESERVE_BODY, headers=headers) as r:
                status, body, retry_after = r.status, json.loads(await r.read()), r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            result.errors += 1
            await asyncio.sleep(RETRY_JITTER_S)
            continue  # the same key: a retry of the same attempt can never hold twice
        finished = time.perf_counter()
        result.race_first = min(result.race_first or started, started)
        result.race_last = max(result.race_last, finished)
        result.attempts += 1
        result.latencies_ms.append((finished - started) * 1000)
        key = uuid.uuid4().hex
        if status == 201:
            result.answers["held"] += 1
            return await _after_winning(http, shared, result, auth, body["id"], abandon=index % 5 == 0)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = error.get("code", "")
        result.answers[code or str(status)] += 1
        if code == "rate_limited":  # over the per-account limit: wait as told (Retry-After), like any client
            await asyncio.sleep(float(retry_after or 1) * rng.uniform(0.5, 1.0))
            continue
        if code != "sold_out":
            result.errors += 1
        if shared.polite:  # a well-behaved client asks again when the server says it makes sense
            await asyncio.sleep(error.get("retry_after_ms", 0) / 1000 * rng.uniform(0.5, 1.5))
        else:  # a buyer (or a bot) hammering the button
            await asyncio.sleep(rng.uniform(0, RETRY_JITTER_S))
    return "still_wanting"


async def _after_winning(http: aiohttp.ClientSession, shared: Shared, result: WorkerResult, auth: dict[str, str],
                         hold_id: int, abandon: bool) -> str:
    """A fifth of the winners abandon the hold; the others check out and pay with the test card."""
    try:
        if abandon:
            async with http.delete(f"{shared.url}/api/holds/{hold_id}", headers=auth) as r:
                if r.status != 200:
                    raise RuntimeError(f"cancel answered {r.status}: {await r.text()}")
            return "abandoned"
        won = time.perf_counter()
        async with http.post(f"{shared.url}/api/checkout", headers=auth,
                             json={"hold_ids": [hold_id], "shipping_address": ADDRESS}) as r:
            if r.status != 201:
                raise RuntimeError(f"checkout answered {r.status}: {await r.text()}")
            order = await r.json()
        async with http.post(f"{shared.url}/api/orders/{order['id']}/pay", headers=auth,
                             json={"payment_method": CARD}) as r:
            if r.status != 200:
                raise RuntimeError(f"pay answered {r.status}: {await r.text()}")
    except (aiohttp.ClientError, TimeoutError, RuntimeError) as error:
        print(f"winner failed: {error}", file=sys.stderr, flush=True)
        result.errors += 1
        return "failed"
    result.paid_units += 1
    result.purchase_ms.append((time.perf_counter() - won) * 1000)
    return "bought"


async def _worker(shared: Shared, buyers: list[tuple[int, str]], seed: int) -> WorkerResult:
    result = WorkerResult()
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # One connection per buyer, opened before anything is measured.
        await asyncio.gather(*(_hammer_once(http, shared) for _ in buyers))
        await asyncio.to_thread(shared.trivial_start.wait)
        await asyncio.gather(*(_hammer(http, shared, result) for _ in buyers))
        await asyncio.to_thread(shared.race_start.wait)
        outcomes = await asyncio.gather(*(_buy(http, shared, result, index, token, rng) for index, token in buyers))
    result.outcomes.update(outcomes)
    return result


async def _hammer_once(http: aiohttp.ClientSession, shared: Shared) -> None:
    for _ in range(20):
        try:
            async with http.get(f"{shared.url}/healthz") as response:
                await response.read()
                return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)


def _worker_main(shared: Shared, buyers: list[tuple[int, str]], seed: int, results: Any) -> None:
    results.put(_encode(asyncio.run(_worker(shared, buyers, seed))))


def _encode(result: WorkerResult) -> dict[str, Any]:
    return {"trivial": result.trivial, "trivial_errors": result.trivial_errors, "attempts": result.attempts,
            "latencies_ms": result.latencies_ms, "outcomes": dict(result.outcomes), "answers": dict(result.answers),
            "errors": result.errors, "paid_units": result.paid_units, "purchase_ms": result.purchase_ms,
            "race_first": result.race_first,
            "race_last": result.race_last}


async def _seed(database_url: str, buyers: int, units: int, secret: str) -> tuple[int, list[str]]:
    """Schema, accounts and the product, written directly: setting up is not what is measured.
    (Server-side modules are imported here, not at the top, so the client processes never load them.)"""
    from sqlalchemy import insert, select

    from accounts.models import UserRow
    from accounts.tokens import issue_access_token
    from accounts.user import User
    from commerce import catalog
    from config.schema import DatabaseSettings
    from store import Database, migrate, now_ms

    db = Database(DatabaseSettings(url=database_url))
    try:
        await migrate(db)
        now = now_ms()
        async with db.write() as session:
            await session.execute(insert(UserRow), [
                {"email": f"buyer{index}@bench.example", "display_name": f"buyer {index}", "role": "viewer",
                 "password_hash": "not-a-hash", "created_at": now, "disabled": False} for index in range(buyers)]
                + [{"email": "host@bench.example", "display_name": "host", "role": "host",
                    "password_hash": "not-a-hash", "created_at": now, "disabled": False}])
            rows = (await session.execute(select(UserRow).order_by(UserRow.id))).scalars().all()
            users = [User.from_row(row) for row in rows]
            host = next(user for user in users if user.role == "host")
            product = await catalog.create_product(session, host, "Limited sneakers", 12_000, currency="USD",
                                                   status="active", stock=units, purchase_limit=1)
        tokens = [issue_access_token(user, secret, 120) for user in users if user.role == "viewer"]
        return product.id, tokens
    finally:
        await db.close()


async def _stock(url: str, product_id: int) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/products/{product_id}") as response:
        variant = (await response.json())["variants"][0]
    return {"available": variant["available"], "held": variant["held"], "sold": variant["sold"]}


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextlib.contextmanager
def seeded_server(backend: str, workdir: Path, buyers: int, units: int) -> Iterator[tuple[Any, int, list[str]]]:
    """A started `run_server.py` on a fresh database (a SQLite file, or a throwaway PostgreSQL cluster on a
    free loopback port) seeded with a host, `buyers` buyers and one product of `units` units (limit 1):
    (the ServerProcess, the product's id, the buyers' access tokens). Everything is stopped on exit."""
    from tests.server_process import ServerProcess
    from tests.servers import PostgresServer

    secret = secrets.token_urlsafe(48)
    postgres: PostgresServer | None = None
    if backend == "postgres":
        postgres = PostgresServer()
        postgres.start()
        database_url = postgres.create_database()
        database_config = f"  url: {database_url}\n  pool_size: 20\n"
    else:
        database_url = f"sqlite+aiosqlite:///{workdir / 'data' / 'pinstream.db'}"
        database_config = f"  url: {database_url}\n"
    server = ServerProcess(workdir, config=f"database:\n{database_config}logging:\n  level: warning\n",
                           env={"PINSTREAM_SECRET_KEY": secret})
    try:
        product_id, tokens = asyncio.run(_seed(database_url, buyers, units, secret))
        server.start()
        yield server, product_id, tokens
    finally:
        server.stop()
        if postgres is not None:
            postgres.stop()


def run(buyers: int, units: int, backend: str, clients: int, trivial_seconds: float, timeout: float,
        workdir: Path, keys: bool = True, polite: bool = False) -> dict[str, Any]:
    from bench.procstat import cpu_seconds

    with seeded_server(backend, workdir, buyers, units) as (server, product_id, tokens):
        context = multiprocessing.get_context("spawn")
        shared = Shared(url=server.url, product_id=product_id, trivial_start=context.Event(),
                        trivial_stop=context.Event(), race_start=context.Event(), race_stop=context.Event(),
                        keys=keys, polite=polite)
        results = context.Queue()
        slices = [list(enumerate(tokens))[index::clients] for index in range(clients)]
        processes = [context.Process(target=_worker_main, args=(shared, part, seed, results), daemon=True)
                     for seed, part in enumerate(slices)]
        for process in processes:
            process.start()
        time.sleep(2.0 + buyers / 2000)  # clients connect every buyer before the clock starts
        assert server.process is not None
        server_pid = [server.process.pid]
        trivial_cpu = cpu_seconds(server_pid)
        shared.trivial_start.set()
        trivial_started = time.monotonic()
        time.sleep(trivial_seconds)
        shared.trivial_stop.set()
        trivial_elapsed = time.monotonic() - trivial_started
        trivial_cpu = cpu_seconds(server_pid) - trivial_cpu
        time.sleep(0.5)
        stock = asyncio.run(_stock(server.url, product_id))  # the product page, loaded before the sale opens
        race_cpu = cpu_seconds(server_pid)
        shared.race_start.set()
        race_started = time.monotonic()
        while time.monotonic() - race_started < timeout:
            stock = asyncio.run(_stock(server.url, product_id))
            if os.environ.get("FLASH_SALE_TRACE"):
                print(f"{time.monotonic() - race_started:6.2f}s {stock}", file=sys.stderr, flush=True)
            if units and stock["sold"] >= units:
                break
            time.sleep(0.1)
        race_cpu = cpu_seconds(server_pid) - race_cpu
        race_elapsed = time.monotonic() - race_started
        shared.race_stop.set()
        collected = [results.get(timeout=900) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        stock = asyncio.run(_stock(server.url, product_id))

    outcomes: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for part in collected:
        outcomes.update(part["outcomes"])
        answers.update(part["answers"])
    latencies = [value for part in collected for value in part["latencies_ms"]]
    purchases = [value for part in collected for value in part["purchase_ms"]]
    attempts = sum(part["attempts"] for part in collected)
    race_seconds = max(part["race_last"] for part in collected) - min(
        part["race_first"] for part in collected if part["race_first"])
    paid_units = sum(part["paid_units"] for part in collected)
    trivial = sum(part["trivial"] for part in collected)
    still_wanting = outcomes.get("still_wanting", 0)
    return {
        "oversold": max(0, stock["sold"] - units) + max(0, paid_units - units),
        "unsold_with_demand": (units - stock["sold"]) if still_wanting and stock["sold"] < units else 0,
        "reserve_rps": round(attempts / race_seconds, 1) if race_seconds > 0 else 0.0,
        "trivial_rps": round(trivial / trivial_elapsed, 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "purchase_p50_ms": round(_percentile(purchases, 0.50), 1),
        "purchase_p99_ms": round(_percentile(purchases, 0.99), 1),
        "backend": backend, "buyers": buyers, "units": units, "clients": clients, "idempotency_keys": keys,
        "polite": polite, "load_average": round(os.getloadavg()[0], 2),
        "reserve_attempts": attempts, "race_seconds": round(race_seconds, 2), "answers": dict(answers),
        "bought": outcomes.get("bought", 0), "abandoned": outcomes.get("abandoned", 0),
        "still_wanting": still_wanting, "paid_units": paid_units, "final_stock": stock,
        "server_cpu": {"trivial_share": round(trivial_cpu / trivial_elapsed, 2),
                       "race_share": round(race_cpu / race_elapsed, 2),
                       "us_per_trivial": round(1e6 * trivial_cpu / max(1, trivial), 1),
                       "us_per_reserve": round(1e6 * race_cpu / max(1, attempts), 1)},
        "errors": sum(part["errors"] for part in collected),
        "trivial_errors": sum(part["trivial_errors"] for part in collected),
    }


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, default=max(1, min(4, (os.cpu_count() or 2))),
                        help="client processes sharing the buyers")
    parser.add_argument("--trivial-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="longest race in seconds")
    parser.add_argument("--no-keys", action="store_true", help="reserve without Idempotency-Key headers")
    parser.add_argument("--polite", action="store_true",
                        help="buyers wait the retry_after_ms a refusal suggests (default: retry after 0-50 ms)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server, the database cluster and the temp directory are cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.units < 0 or args.buyers < args.units:
        parser.error("--units must be 0 or more, and no more than --buyers")
    with tempfile.TemporaryDirectory(prefix="pinstream-flash-sale-") as directory:
        report = run(args.buyers, args.units, args.backend, args.clients, args.trivial_seconds, args.timeout,
                     Path(directory), keys=not args.no_keys, polite=args.polite)
    print(json.dumps(report), flush=True)
    return 0 if report["oversold"] == 0 and report["unsold_with_demand"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
