"""The HTTP shape WHIP (RFC 9725) and WHEP share: SDP bodies in, 201 with a session resource out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from media.api import MediaError, SessionAnswer
from signaling.ice_servers import IceServers

SDP = "application/sdp"
TRICKLE_ICE = "application/trickle-ice-sdpfrag"
MAX_SDP_BYTES = 64 * 1024


async def read_sdp(request: web.Request) -> str:
    if request.content_type != SDP:
        raise MediaError("unsupported_media_type", f"send the offer as {SDP}", 415, field="Content-Type")
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        raise MediaError("payload_too_large", f"SDP offers are limited to {MAX_SDP_BYTES} bytes", 413)
    body = await request.content.read(MAX_SDP_BYTES + 1)
    if len(body) > MAX_SDP_BYTES:
        raise MediaError("payload_too_large", f"SDP offers are limited to {MAX_SDP_BYTES} bytes", 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MediaError("bad_sdp", "the SDP offer is not UTF-8 text", 400) from None
    return validate_offer(text)


def validate_offer(text: str, field: str | None = None) -> str:
    """The checks every SDP offer gets, however it arrived (an HTTP body, a Socket.IO payload)."""
    if len(text.encode("utf-8")) > MAX_SDP_BYTES:
        raise MediaError("payload_too_large", f"SDP offers are limited to {MAX_SDP_BYTES} bytes", 413, field)
    if not text.startswith("v=0"):
        raise MediaError("bad_sdp", "the body is not an SDP offer (it must start with v=0)", 400, field)
    return text


def session_created(location: str, answer: SessionAnswer, ice_server_links: list[str]) -> web.Response:
    response = web.Response(status=201, text=answer.sdp, content_type=SDP)
    response.headers["Location"] = location
    response.headers["ETag"] = f'"{answer.session_id}"'
    for link in ice_server_links:
        response.headers.add("Link", link)
    return response


async def options(_request: web.Request) -> web.Response:
    """Answer OPTIONS (and CORS preflight) with what this resource accepts."""
    return web.Response(status=204, headers={"Accept-Post": SDP, "Accept-Patch": TRICKLE_ICE})


def ice_server_links(servers: IceServers) -> list[str]:
    """`Link` header values for the 201 answer (RFC 9725 section 4.6): one per URL, TURN URLs with their
    credential. Most clients have gathered their candidates by then; those that can still use them will."""
    links = []
    for server in servers.servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username is not None and server.credential is not None:
                link += (f"; username={_quoted(server.username)}; credential={_quoted(server.credential)}"
                         '; credential-type="password"')
            links.append(link)
    return links


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def patch_session(request: web.Request, session_exists: bool, session_id: str) -> web.Response:
    """Trickle ICE (RFC 8840 fragments): candidates are accepted and not needed, since the server gathers all
    of its candidates before answering and reaches the client through its offer's candidates. An ICE
    restart (a fragment with new credentials) is not supported: 422, as the RFC allows."""
    if not session_exists:
        raise MediaError("session_not_found", "no such session", 404)
    if request.content_type != TRICKLE_ICE:
        raise MediaError("unsupported_media_type", f"send {TRICKLE_ICE}", 415, field="Content-Type")
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match not in ("*", f'"{session_id}"'):
        raise MediaError("etag_mismatch", "If-Match does not name this session", 412)
    fragment = (await request.content.read(MAX_SDP_BYTES)).decode("utf-8", "replace")
    if "a=ice-ufrag:" in fragment or "a=ice-pwd:" in fragment:
        raise MediaError("ice_restart_unsupported", "ICE restarts are not supported; start a new session", 422)
    return web.Response(status=204)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_session_routes(app: web.Application, prefix: str, create: Handler, delete: Handler,
                       patch: Handler) -> None:
    """`POST {prefix}/{room}` creates a session resource `{prefix}/{room}/{session}` (DELETE, PATCH)."""
    app.router.add_post(f"{prefix}/{{room}}", create)
    app.router.add_route("OPTIONS", f"{prefix}/{{room}}", options)
    app.router.add_delete(f"{prefix}/{{room}}/{{session}}", delete)
    app.router.add_patch(f"{prefix}/{{room}}/{{session}}", patch)
    app.router.add_route("OPTIONS", f"{prefix}/{{room}}/{{session}}", options)
