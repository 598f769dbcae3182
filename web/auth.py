"""Who is calling: the auth middleware verifies the access token and leaves the caller in `request[PRINCIPAL]`.

A token comes from `Authorization: Bearer …` or, for browsers, from the `pinstream_access` cookie. Requests
authenticated by cookie that change state must also echo the `pinstream_csrf` cookie in `X-CSRF-Token`
(double submit): a cross-site form can make the browser send cookies but cannot read one to copy it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web

from accounts.errors import Unauthorized
from accounts.token_cache import VerifiedTokens
from accounts.tokens import ACCESS_COOKIE, Principal, bearer_token
from web.api.registry import PRINCIPAL, Operation
from web.errors import ApiError

REFRESH_COOKIE = "pinstream_refresh"
CSRF_COOKIE = "pinstream_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _operation(request: web.Request) -> Operation | None:
    operation = getattr(request.match_info.handler, "operation", None)
    return operation if isinstance(operation, Operation) else None


def make_auth_middleware(secret_key: Callable[[], str]) -> Any:
    """The middleware, reading the signing key through `secret_key()` (it is known only once services start).
    Verified tokens are remembered until they expire (`accounts.token_cache`)."""
    tokens = VerifiedTokens()

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        bearer = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        token = bearer if bearer is not None else request.cookies.get(ACCESS_COOKIE) or None
        principal: Principal | None = None
        operation = _operation(request)
        # Only API operations above public are enforced here; WHIP, WHEP and pages check their own callers
        # (a WHIP Bearer token may be a stream key, which is not a JWT).
        needs_caller = operation is not None and operation.access != "public"
        if token is not None:
            try:
                principal = tokens.verify(token, secret_key())
            except Unauthorized as exc:
                if needs_caller:
                    raise ApiError(401, exc.code, exc.message) from None
        request[PRINCIPAL] = principal
        if (principal is not None and bearer is None and needs_caller
                and request.method in UNSAFE_METHODS and not _csrf_matches(request)):
            raise ApiError(403, "csrf_failed",
                           f"send the {CSRF_COOKIE} cookie's value in the {CSRF_HEADER} header")
        response: web.StreamResponse = await handler(request)
        return response

    return auth_middleware


def _csrf_matches(request: web.Request) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), header.encode())
