"""All REST operations in one registry, mounted on the application, and the OpenAPI document describing them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.api import auth, commerce, ice, recordings, rooms, shows, stream_key
from web.api.registry import Api, openapi_document

TITLE = "Pinstream API"
VERSION = "1"

docs = Api()


@docs.route("GET", "/api/openapi.json", summary="This API's OpenAPI 3.1 document", tag="meta")
async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(document())


API = Api([*auth.api.operations, *rooms.api.operations, *shows.api.operations, *stream_key.api.operations,
           *ice.api.operations, *commerce.operations, *docs.operations,
           *recordings.api.operations])


def document() -> dict[str, Any]:
    return openapi_document(API, TITLE, VERSION)


def add_api(app: web.Application) -> None:
    API.add_to(app)
    commerce.install(app)
