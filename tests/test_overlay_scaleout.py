"""Two real server processes on one PostgreSQL and one Redis share a room: every socket, whichever node it
is on, sees the same room events in the same order with consecutive sequence numbers; a Redis that restarts
empty is followed by a `resync` and clients rejoin from a new snapshot. Also: a slow client is dropped to
resync without stalling the room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accounts import create_user
from accounts.tokens import issue_access_token
from commerce import inventory, lineup
from config import Secrets, Settings, apply_overrides
from config.schema import DatabaseSettings
from rooms import create_room
from rooms.live import go_live
from signaling.backpressure import BoundedServer
from signaling.live_room import NAMESPACE
from signaling.room_feed import publish
from store import Database
from tests.api_client import PASSWORD, SECRET, Client
from tests.commerce_helpers import product
from tests.server_process import ServerProcess
from tests.servers import PostgresServer, RedisServer
from tests.test_live_room import Live
from web.app import SOCKETIO, build_app
from web.runtime import RUNTIME

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]
WAIT = 20.0


async def _connect(url: str, token: str | None) -> Live:
    live = Live()
    await live.sio.connect(url, auth={"token": token} if token is not None else None, transports=["websocket"],
                           namespaces=[NAMESPACE], wait_timeout=10)
    return live


def _room_events(live: Live, start: int = 0) -> list[tuple[str, int]]:
    """(name, seq) of the room's events among `live.events[start:]` (private events left out)."""
    return [(name, data["seq"]) for name, data in live.events[start:]
            if "seq" in data and not name.startswith(("checkout.", "session.closed"))]


@pytest.fixture
def nodes(tmp_path: Path, postgres_server: PostgresServer, redis_url: str) -> Iterator[list[ServerProcess]]:
    database = postgres_server.create_database()
    started = []
    try:
        for n in (1, 2):
            directory = tmp_path / f"node{n}"
            directory.mkdir()
            config = (f"data_dir: {directory}\ndatabase:\n  url: {database}\nredis:\n  url: {redis_url}\n"
                      "events:\n  relay_interval_ms: 50\nchat:\n  messages_per_10s: 1000\n"
                      "logging:\n  access_log: false\n")
            started.append(ServerProcess(directory, config, env={"PINSTREAM_SECRET_KEY": SECRET}).start())
        yield started
    finally:
        for node in started:
            node.stop()


async def test_two_nodes_one_ordered_room_and_resync_after_redis_restart(
        nodes: list[ServerProcess], redis_server: RedisServer) -> None:
    first, second = nodes
    database_url = first.config_path.read_text().split("url: ")[1].split("\n")[0]
    db = Database(DatabaseSettings(url=database_url))
    try:
        async with db.write() as session:
            ann = await create_user(session, "ann@example.com", PASSWORD, "host")
            vic = await create_user(session, "vic@example.com", PASSWORD, "viewer")
            room = await create_room(session, ann, "ann", "Ann")
        made = [await product(db, ann, stock=10, title=f"Item {n}") for n in range(2)]
        async with db.write() as session:
            show = await go_live(session, room)
            for item in made:
                await lineup.add(session, ann, show.id, item.id)
        host = await _connect(first.url, issue_access_token(ann, SECRET, 15))
        here = await _connect(first.url, None)
        there = await _connect(second.url, issue_access_token(vic, SECRET, 15))
        snapshots = [(await live.ok("join", {"room": "ann"}))["snapshot"] for live in (host, here, there)]
        start = max(s["seq"] for s in snapshots)

        await host.ok("pin", {"room": "ann", "product_id": made[0].id})

        async def chatter(live: Live, who: str) -> None:
            for n in range(15):
                await live.ok("chat", {"room": "ann", "text": f"{who} {n}"})

        await asyncio.gather(chatter(host, "host"), chatter(there, "vic"))
        for live in (here, there):
            await live.wait_for("chat.message", lambda d: d["text"] == "host 14")
            await live.wait_for("chat.message", lambda d: d["text"] == "vic 14")
        async with db.write() as session:
            await inventory.reserve(session, vic, made[0].id, hold_seconds=60, show_id=show.id)
        hold = await there.wait_for("checkout.hold_created")
        assert hold["product_id"] == made[0].id and hold["seq"] == 1
        for live in (here, there):
            await live.wait_for("stock.changed", lambda d: d["available"] == 9)
        assert not any(name == "checkout.hold_created" for name, _d in here.events)
        await asyncio.sleep(0.5)
        seen_here, seen_there = _room_events(here), _room_events(there)
        assert seen_here == seen_there
        seqs = [seq for _name, seq in seen_here if seq > start]
        assert seqs == list(range(start + 1, start + 1 + len(seqs))) and len(seqs) >= 32
        texts = [d["text"] for name, d in here.events if name == "chat.message"]
        assert texts == [d["text"] for name, d in there.events if name == "chat.message"]

        redis_server.restart()
        for live in (host, here, there):
            assert (await live.wait_for("resync"))["room"] == "ann"
        rejoined = [(await live.ok("join", {"room": "ann"}))["snapshot"] for live in (host, here, there)]
        assert [c["product_id"] for c in rejoined[1]["pinned"]] == [made[0].id]
        assert rejoined[2]["pinned"][0]["available"] == 9
        # From the resync on: whatever arrives after the rejoin's snapshot, before or after these requests.
        marks = [max(i for i, (name, _d) in enumerate(live.events) if name == "resync") for live in (here, there)]
        await host.ok("pin", {"room": "ann", "product_id": made[1].id})
        await there.ok("chat", {"room": "ann", "text": "after the restart"})
        for live, mark, snapshot in zip((here, there), marks, rejoined[1:], strict=True):
            await live.wait_for("chat.message", lambda d: d["text"] == "after the restart")
            # In order and without a gap; other room events (a viewer count) may come in between.
            after = [(name, seq) for name, seq in _room_events(live, mark) if seq > snapshot["seq"]]
            assert [name for name, _seq in after if name in ("pins.changed", "chat.message")] == \
                ["pins.changed", "chat.message"]
            seqs = [seq for _name, seq in after]
            assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))
        for live in (host, here, there):
            await live.close()
    finally:
        await db.close()


@pytest.fixture
async def small_queues(tmp_path: Path) -> AsyncIterator[Client]:
    settings = apply_overrides(Settings(), {
        "data_dir": str(tmp_path), "database.url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "overlay.client_queue_max": 16})
    async with TestClient(TestServer(build_app(settings, Secrets(secret_key=SECRET)))) as client:
        yield client


async def test_a_slow_client_is_dropped_to_resync_and_the_room_goes_on(small_queues: Client) -> None:
    """A raw WebSocket client joins and stops reading; the room sends 3,000 events of 2 KB. The reader keeps
    up and gets every one in order; the server holds at most 16 messages for the stalled one and drops it."""
    edge = small_queues
    db = edge.server.app[RUNTIME].db
    async with db.write() as session:
        ann = await create_user(session, "ann@example.com", PASSWORD, "host")
        await create_room(session, ann, "ann", "Ann")
    reader = Live()
    await reader.sio.connect(str(edge.server.make_url("/")), transports=["websocket"], namespaces=[NAMESPACE])
    start = (await reader.ok("join", {"room": "ann"}))["snapshot"]["seq"]
    stalled = await edge.session.ws_connect(edge.server.make_url("/socket.io/?EIO=4&transport=websocket"),
                                            autoclose=False, max_msg_size=0)
    with contextlib.suppress(Exception):
        await stalled.receive(timeout=5)  # the Engine.IO open packet
        await stalled.send_str(f"40{NAMESPACE},")
        await stalled.receive(timeout=5)  # the namespace connect
        await stalled.send_str(f'42{NAMESPACE},1["join",{{"room":"ann"}}]')
    server = edge.server.app[SOCKETIO]
    assert isinstance(server, BoundedServer)
    padding = "x" * 2048
    total = 3000
    for batch in range(0, total, 100):
        async with db.write() as session:
            for n in range(batch, batch + 100):
                await publish(session, "ann", "test.tick", {"n": n, "padding": padding})
    async with asyncio.timeout(WAIT):
        while sum(1 for name, _d in reader.events if name == "test.tick") < total:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    ticks: list[dict[str, Any]] = [d for name, d in reader.events if name == "test.tick"]
    assert [d["n"] for d in ticks] == list(range(total))
    seqs = [seq for _name, seq in _room_events(reader)]  # ticks and the viewer count, in one sequence
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))
    assert server.dropped >= 1
    await stalled.close()
    await reader.close()
