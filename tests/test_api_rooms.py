"""Rooms, co-hosts, shows and stream keys through the API, and the access level of every operation."""

from __future__ import annotations

import re

import pytest

from accounts import Unauthorized
from rooms import authorize_publish
from tests.api_client import Client, bearer, database, make_user
from web.api.registry import Operation
from web.api.routes import API


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("operation", [op for op in API.operations if op.access in ("host", "admin")],
                         ids=lambda op: op.operation_id)
async def test_host_operations_refuse_viewers_and_anonymous(client: Client, operation: Operation) -> None:
    path = _concrete(operation.path)
    response = await client.request(operation.method, path)
    assert response.status == 401, path
    assert (await response.json())["error"]["code"] == "unauthorized"
    viewer = await bearer(client, "viewer@example.com")
    response = await client.request(operation.method, path, headers=viewer)
    assert response.status == 403, path


async def test_room_lifecycle_cohosts_and_shows(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    other = await bearer(client, "other@example.com", "host")
    cohost = await make_user(client, "co@example.com", "host")
    response = await client.post("/api/rooms", json={"slug": "vintage-finds", "title": "Vintage"}, headers=host)
    assert response.status == 201
    room = await response.json()
    assert room["visibility"] == "public" and room["cohost_ids"] == []
    response = await client.post("/api/rooms", json={"slug": "vintage-finds", "title": "Again"}, headers=host)
    assert response.status == 409
    response = await client.post("/api/rooms", json={"slug": "Bad Slug!", "title": "x"}, headers=host)
    assert response.status == 422 and (await response.json())["error"]["field"] == "slug"

    assert (await (await client.get("/api/rooms/vintage-finds")).json())["title"] == "Vintage"
    assert (await client.get("/api/rooms/nothing-here")).status == 404

    response = await client.patch("/api/rooms/vintage-finds", json={"title": "Denim"}, headers=other)
    assert response.status == 403 and (await response.json())["error"]["code"] == "not_room_owner"
    response = await client.patch("/api/rooms/vintage-finds", json={"visibility": "unlisted"}, headers=host)
    assert response.status == 200 and (await response.json())["visibility"] == "unlisted"
    response = await client.patch("/api/rooms/vintage-finds", json={"visibility": "secret"}, headers=host)
    assert response.status == 422 and (await response.json())["error"]["field"] == "visibility"

    response = await client.post("/api/rooms/vintage-finds/cohosts", json={"user_id": cohost.id}, headers=host)
    assert response.status == 200 and (await response.json())["cohost_ids"] == [cohost.id]
    response = await client.delete(f"/api/rooms/vintage-finds/cohosts/{cohost.id}", headers=host)
    assert response.status == 200 and (await response.json())["cohost_ids"] == []
    response = await client.delete("/api/rooms/vintage-finds/cohosts/abc", headers=host)
    assert response.status == 422

    await client.patch("/api/rooms/vintage-finds", json={"visibility": "public"}, headers=host)
    response = await client.post("/api/rooms/vintage-finds/shows",
                                 json={"title": "Denim drop", "scheduled_start": 2_000_000_000_000}, headers=host)
    assert response.status == 201
    show = await response.json()
    assert show["status"] == "scheduled" and show["room_slug"] == "vintage-finds"
    assert (await (await client.get(f"/api/shows/{show['id']}")).json())["title"] == "Denim drop"
    assert (await client.get("/api/shows/999")).status == 404
    upcoming = await (await client.get("/api/shows", params={"status": "upcoming"})).json()
    assert [entry["id"] for entry in upcoming["shows"]] == [show["id"]]
    assert (await (await client.get("/api/shows")).json())["shows"] == []
    response = await client.get("/api/shows", params={"status": "soon"})
    assert response.status == 422 and (await response.json())["error"]["field"] == "status"


async def test_rotated_stream_key_publishes(client: Client) -> None:
    host = await bearer(client, "host@example.com", "host")
    first = (await (await client.post("/api/me/stream-key", headers=host)).json())["stream_key"]
    response = await client.post("/api/me/stream-key", headers=host)
    assert response.status == 201
    key = (await response.json())["stream_key"]
    assert key != first
    async with database(client).write() as session:
        grant = await authorize_publish(session, key, "new-room", True)
    assert grant.created_room and grant.show.status == "live" and grant.user.email == "host@example.com"
    async with database(client).write() as session:
        with pytest.raises(Unauthorized, match="unknown stream key"):
            await authorize_publish(session, first, "new-room", True)
