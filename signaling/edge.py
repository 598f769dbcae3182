"""What the edge handlers need from the application, handed over by the web process at start-up.

Signaling sits below `web`, so it cannot reach the web runtime; `web/app.py` fills an `EdgeContext` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bus import Bus
from config.schema import Settings
from media.api import MediaControl
from signaling.ice_servers import IceServers
from store import Database


@dataclass(frozen=True)
class EdgeContext:
    database: Callable[[], Database]
    media: Callable[[], MediaControl]
    settings: Callable[[], Settings]
    secret_key: Callable[[], str]
    """Verifies access tokens: a signed-in host may publish with one instead of a stream key."""
    ice_servers: Callable[[str], IceServers]
    """The ICE servers to advertise to the client of a session (by its id), TURN credentials included."""
    bus: Callable[[], Bus | None] = lambda: None
    """The event bus the live rooms deliver their events from (None until the services started)."""


EDGE = web.AppKey("edge", EdgeContext)
