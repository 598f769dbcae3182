"""Liveness, readiness and metrics endpoints for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from web.middleware import METRICS

# name → coroutine that raises when the dependency does not answer
ReadinessCheck = Callable[[], Awaitable[None]]
READINESS = web.AppKey("readiness", dict[str, ReadinessCheck])
CHECK_TIMEOUT = 2.0


async def healthz(_request: web.Request) -> web.Response:
    """The process is up and its event loop answers; says nothing of dependencies."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Every dependency answers (database; Redis when configured): send traffic here."""
    checks = request.app[READINESS]
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ready = all(result == "ok" for result in report.values())
    request.app[METRICS].ready.set(1 if ready else 0)
    return web.json_response({"status": "ready" if ready else "unavailable", "checks": report},
                             status=200 if ready else 503)


async def _run(check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # the failure is the answer; its text may hold addresses but no secrets
        return f"error: {type(exc).__name__}"
    return "ok"


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
