"""Server CPU of one purchase step at a time: hold, checkout, payment, cancel, against a healthz baseline.

    python bench/purchase_steps.py [--buyers 300] [--backend sqlite|postgres]

A flash sale's ratio (bench/flash_sale.py) moves by several points between runs of one commit, because the
server shares two cores with 2,000 buyers' clients. This bench measures what the sale's purchases cost the
server with nothing else going on, so a change to the purchase path shows at once: on a real server
(`run_server.py`, temporary config and database, as in flash_sale.py), buyers one after another reserve the
product, then every fifth cancels and the others check out and pay with the test card. The server process's
CPU (/proc) is read before each request and again after it plus a short settle (`SETTLE_S`, so the outbox
relay's pass that follows a commit is counted with the step that caused it); the idle server's CPU over the
same settles is subtracted. The same is done for `GET /healthz` in the same run: the baseline.

The last line printed is one JSON object: `*_ms` (server CPU per step, and per healthz) and `*_in_healthz`
(each step as a multiple of one healthz, the figure to compare between runs and machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.flash_sale import ADDRESS, CARD, seeded_server  # noqa: E402
from bench.procstat import cpu_seconds  # noqa: E402

SETTLE_S = 0.02
"""Wait after each answer before reading the CPU again, so work the step set off (the relay) counts with it."""
STEPS = ("hold", "checkout", "payment", "cancel", "healthz")


class Meter:
    """Server CPU per request kind, less what the idle server spends over the same settle time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = dict.fromkeys(STEPS, 0.0)
        self.count = dict.fromkeys(STEPS, 0)

    async def measure(self, step: str, request: Callable[[], Awaitable[Any]]) -> Any:
        started = cpu_seconds([self.pid])
        answer = await request()
        await asyncio.sleep(SETTLE_S)
        self.cpu[step] += cpu_seconds([self.pid]) - started
        self.count[step] += 1
        return answer

    async def idle_per_settle(self, samples: int) -> float:
        started = cpu_seconds([self.pid])
        for _ in range(samples):
            await asyncio.sleep(SETTLE_S)
        return (cpu_seconds([self.pid]) - started) / samples


async def _json(response: aiohttp.ClientResponse, status: int) -> Any:
    if response.status != status:
        raise RuntimeError(f"{response.method} {response.url.path} answered {response.status}: {await response.text()}")
    return await response.json()


async def _buy(http: aiohttp.ClientSession, meter: Meter, url: str, product_id: int, token: str,
               abandon: bool) -> None:
    auth = {"Authorization": f"Bearer {token}"}

    async def hold() -> Any:
        async with http.post(f"{url}/api/products/{product_id}/reserve", json={"quantity": 1},
                             headers={**auth, "Idempotency-Key": secrets.token_hex(16)}) as response:
            return await _json(response, 201)

    held = await meter.measure("hold", hold)
    if abandon:
        async def cancel() -> Any:
            async with http.delete(f"{url}/api/holds/{held['id']}", headers=auth) as response:
                return await _json(response, 200)

        await meter.measure("cancel", cancel)
        return

    async def checkout() -> Any:
        async with http.post(f"{url}/api/checkout", headers=auth,
                             json={"hold_ids": [held["id"]], "shipping_address": ADDRESS}) as response:
            return await _json(response, 201)

    order = await meter.measure("checkout", checkout)

    async def pay() -> Any:
        async with http.post(f"{url}/api/orders/{order['id']}/pay", headers=auth,
                             json={"payment_method": CARD}) as response:
            return await _json(response, 200)

    await meter.measure("payment", pay)


async def _measure(url: str, pid: int, product_id: int, tokens: list[str]) -> dict[str, Any]:
    meter = Meter(pid)
    async with aiohttp.ClientSession() as http:
        async def healthz() -> Any:
            async with http.get(f"{url}/healthz") as response:
                return await _json(response, 200)

        for _ in range(50):  # warm both sides up (connections, statement caches)
            await healthz()
        for index, token in enumerate(tokens):
            await _buy(http, meter, url, product_id, token, abandon=index % 5 == 0)
            await meter.measure("healthz", healthz)
        idle = await meter.idle_per_settle(len(tokens))
    per_step = {step: 1000 * (meter.cpu[step] / meter.count[step] - idle) for step in STEPS if meter.count[step]}
    healthz_ms = per_step["healthz"]
    report: dict[str, Any] = {f"{step}_ms": round(value, 3) for step, value in per_step.items()}
    report.update({f"{step}_in_healthz": round(value / healthz_ms, 1) for step, value in per_step.items()
                   if step != "healthz" and healthz_ms > 0})
    report["purchase_ms"] = round(sum(per_step[step] for step in ("hold", "checkout", "payment")), 2)
    report["idle_ms_per_settle"] = round(1000 * idle, 3)
    report["counts"] = meter.count
    return report


def run(buyers: int, backend: str, workdir: Path) -> dict[str, Any]:
    with seeded_server(backend, workdir, buyers, buyers) as (server, product_id, tokens):
        assert server.process is not None
        started = time.monotonic()
        report = asyncio.run(_measure(server.url, server.process.pid, product_id, tokens))
    report.update({"backend": backend, "buyers": buyers, "seconds": round(time.monotonic() - started, 1)})
    return report


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buyers", type=int, default=300)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    if args.buyers < 5:
        parser.error("--buyers must be at least 5 (every fifth cancels)")
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds like Ctrl-C: server, cluster and temp directory go
    with tempfile.TemporaryDirectory(prefix="pinstream-purchase-steps-") as directory:
        report = run(args.buyers, args.backend, Path(directory))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
