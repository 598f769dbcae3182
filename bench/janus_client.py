"""A minimal client of Janus's HTTP API (videoroom plugin), enough for the benchmark's publisher and viewers.

One Janus session per client process, one plugin handle per peer connection. Requests answered later by the
plugin ("ack" first) are matched to their events by transaction through one long-poll loop, which also keeps
the session alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import aiohttp

PLUGIN = "janus.plugin.videoroom"
REQUEST_TIMEOUT_S = 20.0


class JanusError(RuntimeError):
    pass


class JanusSession:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.session_id: int | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        transaction = secrets.token_hex(8)
        async with self.http.post(f"{self.base_url}{path}", json={**payload, "transaction": transaction},
                                  timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{payload.get('janus')}: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        reply = await self._post("", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._poller = asyncio.create_task(self._poll())

    async def attach(self) -> int:
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": PLUGIN})
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, listparticipants...): its plugin data."""
        reply = await self._post(f"/{self.session_id}/{handle}", {"janus": "message", "body": body})
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data

    async def message(self, handle: int, body: dict[str, Any],
                      jsep: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous plugin request: waits for its event and returns (plugin data, jsep)."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        payload: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            async with self.http.post(f"{self.base_url}/{self.session_id}/{handle}", json=payload,
                                      timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
                ack: dict[str, Any] = await response.json(content_type=None)
            if ack.get("janus") == "error":
                raise JanusError(f"{body.get('request')}: {ack.get('error')}")
            event = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(transaction, None)
        data: dict[str, Any] = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data, event.get("jsep")

    async def trickle_completed(self, handle: int) -> None:
        await self._post(f"/{self.session_id}/{handle}", {"janus": "trickle", "candidate": {"completed": True}})

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.base_url}/{self.session_id}", params={"maxev": "10"},
                                         timeout=aiohttp.ClientTimeout(total=45)) as response:
                    reply = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in reply if isinstance(reply, list) else [reply]:
                future = self._pending.get(event.get("transaction", ""))
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)

    async def destroy(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.session_id is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, JanusError):
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
