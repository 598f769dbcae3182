"""Overlay fan-out benchmark: one stock change reaches every socket of a crowded room.

    python bench/overlay_fanout.py [--clients 2000] [--nodes 1|2] [--processes 4] [--rounds 10]

Starts Pinstream (`run_server.py`; one node on SQLite, or two nodes on a throwaway PostgreSQL and Redis,
the clients split between them) with one live show whose lineup has one product, and in the same run a bare
python-socketio server (`bench/bare_socketio_server.py`: the floor). Client processes open `--clients`
Socket.IO connections (Engine.IO v4 over WebSocket, spoken directly, so the client side stays light) to each
system in turn and join the room. Then, `--rounds` times a second apart, the coordinator changes the stock:
on Pinstream through the REST API (`POST /api/products/{id}/variants/{vid}/stock`, which goes through the
outbox, the bus, the stock coalescer and the room feed like any change), on the floor by asking the bare
server to emit. Delivery latency is the wall-clock time from just before that request to the client reading
the `stock.changed` event that carries the new value (one machine, one clock).

The last line printed is one JSON object: p50_ms, p99_ms, delivered_ratio (Pinstream), floor_p50_ms,
floor_p99_ms, floor_delivered_ratio, p99_vs_floor, and the parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

NAMESPACE = "/live"
ROOM = "bench"
BASE_STOCK = 1_000_000
CONNECT_CONCURRENCY = 50


@dataclass
class Phase:
    """What the client processes share with the coordinator."""

    connected: Any
    """A queue: each process puts how many of its clients joined."""
    done: Event
    results: Any


Record = tuple[int, float, float]
"""The stock value an event carried, when it was read (wall clock), the server time it carries (or 0)."""


async def _client(url: str, received: list[Record], ready: asyncio.Event, done: asyncio.Event,
                  http: aiohttp.ClientSession, gate: asyncio.Semaphore) -> bool:
    """One Socket.IO client: handshake, join, then record the time every `stock.changed` arrives."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with gate:
        try:
            ws = await http.ws_connect(ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5))
            opened = await ws.receive_str(timeout=30)
            assert opened.startswith("0"), opened
            await ws.send_str(f"40{NAMESPACE},")
            while not (await ws.receive_str(timeout=30)).startswith(f"40{NAMESPACE},"):
                pass
            await ws.send_str(f'42{NAMESPACE},1["join",{{"room":"{ROOM}"}}]')
            while True:
                frame = await ws.receive_str(timeout=60)
                if frame == "2":
                    await ws.send_str("3")
                elif frame.startswith(f"43{NAMESPACE},1"):
                    break
        except Exception as exc:
            print(f"client failed to join: {type(exc).__name__}: {exc}", file=sys.stderr)
            return False
    ready.set()
    prefix = f'42{NAMESPACE},["stock.changed",'
    waiter = asyncio.ensure_future(done.wait())
    try:
        while not done.is_set():
            receiving = asyncio.ensure_future(ws.receive())
            finished, _pending = await asyncio.wait({receiving, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in finished:
                receiving.cancel()
                break
            message = receiving.result()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = message.data
            if frame == "2":
                await ws.send_str("3")
            elif frame.startswith(prefix):
                at = time.time()
                payload = json.loads(frame[len(f"42{NAMESPACE},"):])[1]
                received.append((int(payload["available"]), at, payload.get("server_time_ms", 0) / 1000))
    finally:
        waiter.cancel()
        await ws.close()
    return True


async def _clients(systems: list[list[str]], count: int, phase: Phase) -> None:
    """`count` clients on each system (a system is its node URLs; clients alternate between nodes)."""
    done = asyncio.Event()
    records: list[list[list[Record]]] = [[[] for _ in range(count)] for _ in systems]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        readies = [asyncio.Event() for _ in range(count * len(systems))]
        tasks = [asyncio.create_task(_client(urls[index % len(urls)], records[which][index],
                                              readies[which * count + index], done, http, gate))
                 for which, urls in enumerate(systems) for index in range(count)]
        while True:
            joined = sum(1 for ready in readies if ready.is_set())
            failed = sum(1 for task in tasks if task.done() and not task.result())
            if joined + failed >= len(tasks):
                phase.connected.put(joined)
                break
            await asyncio.sleep(0.1)
        while not phase.done.is_set():  # noqa: ASYNC110 (a multiprocessing event)
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    phase.results.put(records)


def _worker(systems: list[list[str]], count: int, phase: Phase) -> None:
    asyncio.run(_clients(systems, count, phase))


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _measure(systems: list[list[str]], fires: list[Any], clients: int, processes: int, rounds: int,
             context: Any) -> tuple[list[dict[str, Any]], float]:
    """Connect `clients` clients to every system, then run the rounds: in each, every system in turn gets a
    stock change (`fire(value)`), a second apart, so all of them are measured under the same machine load.
    Returns per system the latency percentiles and the delivered ratio, and the seconds connecting took."""
    phase = Phase(connected=context.Queue(), done=context.Event(), results=context.Queue())
    shares = [clients // processes + (1 if index < clients % processes else 0) for index in range(processes)]
    workers = [context.Process(target=_worker, args=(systems, share, phase), daemon=True)
               for share in shares if share]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    joined = sum(phase.connected.get(timeout=900) for _ in workers)
    connect_seconds = time.monotonic() - started
    if joined < clients * len(systems):
        print(f"only {joined} of {clients * len(systems)} clients joined", file=sys.stderr)
    time.sleep(1.5)  # let the joins' presence updates go out before the clock starts
    sent: list[dict[int, float]] = [{} for _ in systems]
    for round_index in range(rounds):
        value = BASE_STOCK + round_index + 1
        for which, fire in enumerate(fires):
            sent[which][value] = time.time()
            fire(value)
            time.sleep(1.0)
    time.sleep(2.0)
    phase.done.set()
    collected = [phase.results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    reports = []
    for which in range(len(systems)):
        records = [record for part in collected for client in part[which] for record in client]
        latencies = [(at - sent[which][value]) * 1000 for value, at, _stamp in records if value in sent[which]]
        stamped = [(stamp - sent[which][value]) * 1000 for value, _at, stamp in records if value in sent[which]]
        by_round: dict[int, list[float]] = {}
        for value, at, _stamp in records:
            if value in sent[which]:
                by_round.setdefault(value, []).append((at - sent[which][value]) * 1000)
        reports.append({"p50_ms": round(_percentile(latencies, 0.50), 1),
                        "round_max_ms": [round(max(by_round[value]), 1) for value in sorted(by_round)],
                        "p99_ms": round(_percentile(latencies, 0.99), 1),
                        "max_ms": round(max(latencies, default=0.0), 1),
                        "delivered_ratio": round(len(latencies) / (clients * rounds), 4),
                        "to_event_p50_ms": round(_percentile(stamped, 0.50), 1)})
    return reports, connect_seconds


def _post(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


async def _seed(database_url: str, secret: str) -> tuple[int, int, str]:
    """Schema, a host with a room live now, one product in its lineup (server modules imported here only)."""
    from accounts import create_user
    from accounts.tokens import issue_access_token
    from commerce import catalog, lineup
    from config.schema import DatabaseSettings
    from rooms import create_room
    from rooms.live import go_live
    from store import Database, migrate

    db = Database(DatabaseSettings(url=database_url))
    try:
        await migrate(db)
        async with db.write() as session:
            host = await create_user(session, "host@bench.example", "bench-password-1", "host")
            room = await create_room(session, host, ROOM, "Bench")
            product = await catalog.create_product(session, host, "Bench sneakers", 9_900, currency="USD",
                                                   status="active", stock=BASE_STOCK)
            show = await go_live(session, room)
            await lineup.add(session, host, show.id, product.id)
        return product.id, product.variants[0].id, issue_access_token(host, secret, 60)
    finally:
        await db.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def run(clients: int, nodes: int, processes: int, rounds: int, workdir: Path) -> dict[str, Any]:
    from tests.server_process import ServerProcess
    from tests.servers import PostgresServer, RedisServer, free_port

    context = multiprocessing.get_context("spawn")
    secret = secrets.token_urlsafe(48)
    postgres = redis = None
    servers: list[ServerProcess] = []
    port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_socketio_server.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bare_url = f"http://127.0.0.1:{port}"
        _wait_healthy(bare_url, bare)
        if nodes == 1:
            database_url = f"sqlite+aiosqlite:///{workdir / 'pinstream.db'}"
            extra = ""
        else:
            postgres, redis = PostgresServer(), RedisServer()
            postgres.start()
            redis.start()
            database_url = postgres.create_database()
            extra = f"redis:\n  url: {redis.url}\n"
        product_id, variant_id, token = asyncio.run(_seed(database_url, secret))
        for index in range(nodes):
            directory = workdir / f"node{index + 1}"
            directory.mkdir()
            config = (f"data_dir: {directory}\ndatabase:\n  url: {database_url}\n{extra}"
                      "logging:\n  level: warning\n  access_log: false\nrate_limits:\n  writes_per_minute: 10000\n")
            servers.append(ServerProcess(directory, config, env={"PINSTREAM_SECRET_KEY": secret}).start())
        stock_url = f"{servers[0].url}/api/products/{product_id}/variants/{variant_id}/stock"
        (pinstream, floor), connect_seconds = _measure(
            [[server.url for server in servers], [bare_url]],
            [lambda _value: _post(stock_url, {"delta": 1}, token),
             lambda value: _post(f"{bare_url}/fire?available={value}")],
            clients, processes, rounds, context)
    finally:
        bare.kill()
        bare.wait(timeout=10)
        for server in servers:
            server.stop()
        for service in (postgres, redis):
            if service is not None:
                service.stop()
    return {**pinstream, "floor_p50_ms": floor["p50_ms"], "floor_p99_ms": floor["p99_ms"],
            "floor_max_ms": floor["max_ms"], "floor_delivered_ratio": floor["delivered_ratio"],
            "floor_round_max_ms": floor["round_max_ms"],
            "p99_vs_floor": round(pinstream["p99_ms"] / floor["p99_ms"], 2) if floor["p99_ms"] else None,
            "clients": clients, "nodes": nodes, "processes": processes, "rounds": rounds,
            "connect_seconds": round(connect_seconds, 1), "load_average": round(os.getloadavg()[0], 2)}


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="overlay-fanout-") as workdir:
        report = run(args.clients, args.nodes, max(1, args.processes), args.rounds, Path(workdir))
    print(json.dumps(report))
    return 0 if report["delivered_ratio"] == 1.0 and report["floor_delivered_ratio"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
