"""Shows: scheduling them in a room, and the live, upcoming and past listings."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from accounts.errors import NotFound
from rooms import service
from web.api.common import ShowOut, caller, runtime
from web.api.registry import Api

api = Api()


class ShowIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"title": "Denim drop", "description": "Fifty pairs of 90s jeans", "scheduled_start": 1767268800000},
        {"title": "Surprise show"}]})

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    scheduled_start: int | None = Field(None, ge=0, description="milliseconds since the Unix epoch")


class ShowQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["live", "upcoming", "past"] = "live"
    limit: int = Field(20, ge=1, le=100)


class ShowList(BaseModel):
    shows: list[ShowOut]


@api.route("POST", "/api/rooms/{slug}/shows", summary="Schedule a show in a room", tag="shows", access="host",
           body=ShowIn, response=ShowOut, status=201, errors=(404,), rate_limit="write")
async def schedule_show(request: web.Request, body: ShowIn) -> ShowOut:
    async with runtime(request).db.write() as session:
        room = await service.get_room(session, request.match_info["slug"])
        show = await service.schedule_show(session, await caller(request, session), room, body.title,
                                           body.description, body.scheduled_start)
    return ShowOut.of(show)


@api.route("GET", "/api/shows", summary="Shows in public rooms: live (default), upcoming or past",
           tag="shows", query=ShowQuery, response=ShowList)
async def list_shows(request: web.Request, query: ShowQuery) -> ShowList:
    async with runtime(request).db.read() as session:
        shows = await service.list_shows(session, query.status, query.limit)
    return ShowList(shows=[ShowOut.of(show) for show in shows])


@api.route("GET", "/api/shows/{id}", summary="A show", tag="shows", response=ShowOut, errors=(404,))
async def get_show(request: web.Request) -> ShowOut:
    show_id = request.match_info["id"]
    if not show_id.isdigit():
        raise NotFound("show_not_found", "no such show")
    async with runtime(request).db.read() as session:
        return ShowOut.of(await service.get_show(session, int(show_id)))
