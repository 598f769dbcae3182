"""Cross-cutting request handling: request ids, CORS from live config, body limits, metrics."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

from aiohttp import hdrs, web

from config.logs import request_id
from config.reload import ConfigHolder
from web.metrics import Metrics

CONFIG = web.AppKey("config", ConfigHolder)
METRICS = web.AppKey("metrics", Metrics)

# Headers a browser client may read; WHIP/WHEP clients need Location, Link and ETag.
EXPOSED_HEADERS = "Location, Link, ETag, X-Request-Id, Retry-After"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match, Idempotency-Key, X-CSRF-Token, X-Request-Id, Range"
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
MEDIA_PATHS = ("/hls/", "/recordings/")
"""Served to other sites' players under `hls.cors_origins`."""


_REQUEST_ID_PREFIX = secrets.token_hex(6)
_REQUEST_IDS = (f"{_REQUEST_ID_PREFIX}{number:010x}" for number in itertools.count())
"""Request ids: a random prefix per process and a counter, unique across nodes and restarts (nothing secret:
uuid4 cost a getrandom call per request, a few percent of a refused reserve)."""


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else next(_REQUEST_IDS)
    token = request_id.set(rid)
    try:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Request-Id"] = rid
        return response
    finally:
        request_id.reset(token)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status_code
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[METRICS].observe_request(request.method, name, status, time.perf_counter() - started)


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get(hdrs.ORIGIN)
    if not origin:
        return None
    settings = request.app[CONFIG].current
    # Media for other sites' players (HLS, recordings) has its own list.
    media = request.path.startswith(MEDIA_PATHS)
    allowed = settings.hls.cors_origins if media else settings.server.cors_origins
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    origin = _allowed_origin(request)
    is_preflight = (request.method == hdrs.METH_OPTIONS
                    and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)
    if is_preflight:
        # A route's own OPTIONS handler (WHIP/WHEP: Accept-Post) answers the preflight too.
        own_options = request.match_info.route.method == hdrs.METH_OPTIONS
        response: web.StreamResponse = await handler(request) if own_options else web.Response(status=204)
        if origin:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOWED_METHODS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(_cors_headers(origin))
            raise
    response.headers.update(_cors_headers(origin))
    return response


def _cors_headers(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {hdrs.VARY: "Origin"}
    headers: dict[str, str] = {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin, hdrs.VARY: "Origin",
                               hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: EXPOSED_HEADERS}
    if origin != "*":
        headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    return headers


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse oversized bodies up front from the live limit (aiohttp's own limit is fixed at start)."""
    limit = request.app[CONFIG].current.server.max_body_bytes
    own_limit = getattr(request.match_info.handler, "checks_body_size", False)  # an upload names its field
    if not own_limit and request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=f"request body over the {limit}-byte limit")
    if not own_limit:
        request._client_max_size = limit  # enforced by aiohttp while reading chunked bodies
    response: web.StreamResponse = await handler(request)
    return response
