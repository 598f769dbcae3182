"""The ICE servers a client is told about: STUN as configured, TURN with credentials that expire.

TURN credentials follow the TURN REST scheme that coturn implements with `use-auth-secret`: the username is
"<expiry as Unix time>:<who>" and the password is base64(HMAC-SHA1(shared secret, username)). The TURN server
recomputes the password from the username and its copy of the secret and refuses it once the expiry has
passed, so it needs no user database and a client never holds anything that outlives the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass

from config.schema import MediaSettings

logger = logging.getLogger(__name__)

# coturn splits the username at its first ':' (the REST API separator) and reads the expiry before it; keeping
# the id to a plain alphabet keeps that split unambiguous and the name well within STUN's 513-byte limit.
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ID_MAX = 64


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: int
    """Unix time in seconds, as written in the username."""


def turn_credential(secret: str, user: str, ttl_seconds: int, now: float | None = None) -> TurnCredential:
    """A credential for `user` (an account, guest or session id, for the TURN server's logs) valid for
    `ttl_seconds` from `now`."""
    expires_at = int(time.time() if now is None else now) + ttl_seconds
    username = f"{expires_at}:{_ID_UNSAFE.sub('-', user)[:_ID_MAX] or 'anonymous'}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


@dataclass(frozen=True)
class IceServer:
    """One entry of a browser's `RTCConfiguration.iceServers`: URLs sharing one credential (none for STUN)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class IceServers:
    servers: tuple[IceServer, ...]
    expires_at: int | None
    """When the TURN credentials expire (Unix seconds); None when there are none."""


_warned_no_secret = False


def ice_servers(media: MediaSettings, turn_secret: str | None, user: str, now: float | None = None) -> IceServers:
    """The servers to hand one client now, with TURN credentials minted for it. TURN URLs added by a reload
    while no secret was loaded at start are left out (credentials nobody can check would only fail later)."""
    global _warned_no_secret
    servers: list[IceServer] = []
    if media.ice.stun_urls:
        servers.append(IceServer(tuple(media.ice.stun_urls)))
    expires_at: int | None = None
    if media.turn.urls:
        if turn_secret:
            minted = turn_credential(turn_secret, user, media.turn.credential_ttl_seconds, now)
            servers.append(IceServer(tuple(media.turn.urls), minted.username, minted.credential))
            expires_at = minted.expires_at
        elif not _warned_no_secret:
            _warned_no_secret = True
            logger.warning("media.turn.urls is set but no TURN secret was loaded at start (PINSTREAM_TURN_SECRET "
                           "or media.turn.secret_file): TURN servers are not advertised until a restart")
    return IceServers(tuple(servers), expires_at)
