"""Rooms: creating and changing them, and their co-hosts."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from accounts.errors import Invalid
from rooms import service
from rooms.values import GuestPolicy, Visibility
from web.api.common import RoomOut, caller, runtime
from web.api.registry import Api

api = Api()


class RoomIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"slug": "vintage-finds", "title": "Vintage finds", "visibility": "public",
         "guest_policy": "watch_and_chat"},
        {"slug": "friday-drop", "title": "Friday drop"}]})

    slug: str = Field(min_length=3, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    visibility: Visibility = "public"
    guest_policy: GuestPolicy = "watch_and_chat"


class RoomPatch(BaseModel):
    """Only the fields given change; the slug never does."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"title": "Vintage finds: denim special"}, {"visibility": "unlisted", "guest_policy": "no_guests"}]})

    title: str | None = Field(None, min_length=1, max_length=200)
    visibility: Visibility | None = None
    guest_policy: GuestPolicy | None = None


class CohostIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": 42}]})

    user_id: int = Field(ge=1)


@api.route("POST", "/api/rooms", summary="Create a room you own", tag="rooms", access="host", body=RoomIn,
           response=RoomOut, status=201, errors=(409,), rate_limit="write")
async def create_room(request: web.Request, body: RoomIn) -> RoomOut:
    async with runtime(request).db.write() as session:
        room = await service.create_room(session, await caller(request, session), body.slug, body.title,
                                         body.visibility, body.guest_policy)
    return RoomOut.of(room)


@api.route("GET", "/api/rooms/{slug}", summary="A room", tag="rooms", response=RoomOut, errors=(404,))
async def get_room(request: web.Request) -> RoomOut:
    async with runtime(request).db.read() as session:
        return RoomOut.of(await service.get_room(session, request.match_info["slug"]))


@api.route("PATCH", "/api/rooms/{slug}", summary="Change a room (owner or admin)", tag="rooms", access="host",
           body=RoomPatch, response=RoomOut, errors=(404,), rate_limit="write")
async def update_room(request: web.Request, body: RoomPatch) -> RoomOut:
    async with runtime(request).db.write() as session:
        room = await service.get_room(session, request.match_info["slug"])
        updated = await service.update_room(session, await caller(request, session), room, title=body.title,
                                            visibility=body.visibility, guest_policy=body.guest_policy)
    return RoomOut.of(updated)


@api.route("POST", "/api/rooms/{slug}/cohosts", summary="Let another host publish into a room", tag="rooms",
           access="host", body=CohostIn, response=RoomOut, errors=(404,), rate_limit="write")
async def add_cohost(request: web.Request, body: CohostIn) -> RoomOut:
    async with runtime(request).db.write() as session:
        room = await service.get_room(session, request.match_info["slug"])
        return RoomOut.of(await service.add_cohost(session, await caller(request, session), room, body.user_id))


@api.route("DELETE", "/api/rooms/{slug}/cohosts/{user_id}", summary="Remove a co-host", tag="rooms",
           access="host", response=RoomOut, errors=(404,), rate_limit="write")
async def remove_cohost(request: web.Request) -> RoomOut:
    user_id = request.match_info["user_id"]
    if not user_id.isdigit():
        raise Invalid("invalid_user_id", "user_id must be a number", "user_id")
    async with runtime(request).db.write() as session:
        room = await service.get_room(session, request.match_info["slug"])
        return RoomOut.of(await service.remove_cohost(session, await caller(request, session), room,
                                                      int(user_id)))
