"""Fixed-window rate limits per (scope, client address) and per (scope, account).

With Redis configured the counters live there, so every node counts against one limit; without it (or while
Redis is unreachable) each node counts in its own memory, and N nodes allow up to N times the limit. Either
way the limits blunt password guessing and floods; they do not meter usage exactly. Limits are read from the
live config at every check.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.schema import RateLimitSettings
from web.errors import ApiError

logger = logging.getLogger(__name__)

RateScope = str
# Sweep expired windows once this many counters exist, so memory stays bounded by the active clients.
_SWEEP_AT = 10_000
_KEY_PREFIX = "pinstream:rate:"
_FALLBACK_LOG_SECONDS = 60.0


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


class Counters(Protocol):
    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one request against `key`: (requests in the current window, seconds until it ends)."""
        ...


@dataclass
class MemoryCounters:
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        now = self.clock()
        if len(self._windows) >= _SWEEP_AT:
            # Windows are at most an hour long; anything older than that is over.
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < max(window, 3600.0)}
        started, count = self._windows.get(key, (now, 0))
        if now - started >= window:
            started, count = now, 0
        self._windows[key] = (started, count + 1)
        return count + 1, started + window - now


@dataclass
class RedisCounters:
    """One INCR per counter; the window starts with the first request (PEXPIRE NX), as in memory."""

    redis: Redis
    fallback: MemoryCounters = field(default_factory=MemoryCounters)
    _warned_at: float = -_FALLBACK_LOG_SECONDS

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(_KEY_PREFIX + key)
                pipe.pexpire(_KEY_PREFIX + key, int(window * 1000), nx=True)
                pipe.pttl(_KEY_PREFIX + key)
                count, _set, ttl_ms = await pipe.execute()
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at >= _FALLBACK_LOG_SECONDS:
                self._warned_at = now
                logger.warning("rate limits counted on this node only: Redis unavailable", extra={"error": str(exc)})
            return await self.fallback.hit(key, window)
        return int(count), max(0.0, int(ttl_ms) / 1000) if int(ttl_ms) >= 0 else window


@dataclass
class RateLimiter:
    settings: Callable[[], RateLimitSettings]
    counters: Counters = field(default_factory=MemoryCounters)

    async def check(self, scope: RateScope, address: str | None, user_id: int | None) -> None:
        """Count one request; ApiError 429 "rate_limited" with Retry-After once a counter is over its limit."""
        limit, window = _limit(self.settings(), scope)
        keys = [f"{scope}:ip:{address}"] if address and not _per_account_only(scope) else []
        if user_id is not None:
            keys.append(f"{scope}:user:{user_id}")
        retry_after = 0.0
        for key in keys:
            count, remaining = await self.counters.hit(key, window)
            if count > limit:
                retry_after = max(retry_after, remaining)
        if retry_after > 0:
            raise ApiError(429, "rate_limited", "too many requests; try again later",
                           headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
