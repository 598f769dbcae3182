"""Fixed-window rate limits kept in memory, per (scope, client address) and per (scope, account).

Each node counts on its own, so with N nodes behind a balancer a client gets up to N times the limit; the
limits are there to blunt password guessing and floods, not to meter usage exactly. Limits are read from the
live config at every check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from config.schema import RateLimitSettings
from web.errors import ApiError

RateScope = str
# Sweep expired windows once this many counters exist, so memory stays bounded by the active clients.
_SWEEP_AT = 10_000


def _limit(settings: RateLimitSettings, scope: RateScope) -> tuple[int, float]:
    """(requests allowed, window in seconds) for a scope."""
    if scope == "login":
        return settings.login_per_minute, 60.0
    if scope == "signup":
        return settings.signup_per_hour, 3600.0
    if scope == "write":
        return settings.writes_per_minute, 60.0
    if scope == "reserve":
        return settings.reserves_per_second, 1.0
    raise ValueError(f"unknown rate limit scope {scope!r}")


def _per_account_only(scope: RateScope) -> bool:
    """Scopes counted per account alone: reserve, where many honest buyers share one address (a venue's Wi-Fi,
    a carrier's NAT) and a per-address limit would refuse them together."""
    return scope == "reserve"


@dataclass
class RateLimiter:
    settings: Callable[[], RateLimitSettings]
    clock: Callable[[], float] = time.monotonic
    _windows: dict[tuple[str, str, str], tuple[float, int]] = field(default_factory=dict)

    def check(self, scope: RateScope, address: str | None, user_id: int | None) -> None:
        """Count one request; ApiError 429 "rate_limited" with Retry-After once a counter is over its limit."""
        limit, window = _limit(self.settings(), scope)
        now = self.clock()
        if len(self._windows) >= _SWEEP_AT:
            self._sweep(now, window)
        keys = [("ip", address)] if address and not _per_account_only(scope) else []
        if user_id is not None:
            keys.append(("user", str(user_id)))
        retry_after = 0.0
        for kind, value in keys:
            key = (scope, kind, value)
            started, count = self._windows.get(key, (now, 0))
            if now - started >= window:
                started, count = now, 0
            count += 1
            self._windows[key] = (started, count)
            if count > limit:
                retry_after = max(retry_after, started + window - now)
        if retry_after > 0:
            raise ApiError(429, "rate_limited", "too many requests; try again later",
                           headers={"Retry-After": str(max(1, math.ceil(retry_after)))})

    def _sweep(self, now: float, window: float) -> None:
        # Windows are at most an hour long; anything older than that (or than this scope's window) is over.
        horizon = max(window, 3600.0)
        self._windows = {key: value for key, value in self._windows.items() if now - value[0] < horizon}


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
