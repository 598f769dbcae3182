"""ICE servers for our own pages, fetched before they create a peer connection.

WHIP and WHEP advertise the same servers in Link headers, but only in the answer: by then a browser has
gathered its candidates, and a viewer that can only get through a TURN relay would have none to offer.
"""

from __future__ import annotations

import secrets

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from signaling.ice_servers import ice_servers
from web.api.common import runtime, settings
from web.api.registry import PRINCIPAL, Api

api = Api()


class IceServerOut(BaseModel):
    """One `RTCIceServer`; username and credential are present only for TURN."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServersOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [{
        "iceServers": [{"urls": ["stun:stun.example.com:3478"]},
                       {"urls": ["turn:turn.example.com:3478?transport=udp"],
                        "username": "1767272400:7", "credential": "3S0Zx0aBIbzv0GSNTdDgtcwHIB0="}],
        "expires_at": 1767272400000}]})

    ice_servers: list[IceServerOut] = Field(alias="iceServers",
                                            description="pass as `new RTCPeerConnection({iceServers})`")
    expires_at: int | None = Field(description="milliseconds since the Unix epoch when the TURN credentials "
                                                "expire; null when there are none. Ask again before then.")


@api.route("GET", "/api/ice-servers", summary="STUN and TURN servers for a new peer connection, with "
           "short-lived TURN credentials", tag="media", response=IceServersOut)
async def get_ice_servers(request: web.Request) -> web.Response:
    principal = request.get(PRINCIPAL)
    # The TURN server logs the id after the expiry in the username: the account or guest, else a random one.
    who = principal.subject if principal is not None else f"anonymous-{secrets.token_hex(6)}"
    found = ice_servers(settings(request).media, runtime(request).secrets.turn_secret, who)
    body = IceServersOut(
        ice_servers=[IceServerOut(urls=list(server.urls), username=server.username,
                                  credential=server.credential) if server.username is not None
                     else IceServerOut(urls=list(server.urls)) for server in found.servers],
        expires_at=found.expires_at * 1000 if found.expires_at is not None else None)
    # Credentials are minted per request: no cache (shared or private) may hand them to someone else.
    return web.json_response(text=body.model_dump_json(by_alias=True, exclude_unset=True),
                             headers={"Cache-Control": "no-store"})
