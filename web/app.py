"""The composition root of the web process: one aiohttp application with Socket.IO attached, and the
services it runs (database, event bus and outbox relay, durable jobs, config watcher, media workers)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import socketio
from aiohttp import web

from accounts.service import ensure_first_admin
from bus import Bus, OutboxRelay, create_bus, redis_client
from config.loader import load_settings
from config.logs import configure_logging
from config.reload import ConfigHolder, ConfigWatcher, ReloadResult
from config.schema import Settings
from config.secrets import Secrets, ensure_secret_key
from media.api import MediaControl, MediaError
from media.router import MediaRouter
from signaling.edge import EdgeContext
from signaling.edge_routes import add_edge
from signaling.ice_servers import ice_servers
from signaling.socketio import create_socketio
from store import Database, migrate
from store.jobs import JobRunner
from web import health, hls_routes, pages
from web.api.routes import add_api
from web.auth import make_auth_middleware
from web.errors import error_middleware
from web.hls import HlsService
from web.metrics import Metrics
from web.middleware import (
    CONFIG,
    METRICS,
    body_limit_middleware,
    cors_middleware,
    metrics_middleware,
    request_id_middleware,
)
from web.ratelimit import RATE_LIMITER, MemoryCounters, RateLimiter, RedisCounters
from web.runtime import RUNTIME, Runtime

logger = logging.getLogger(__name__)


SOCKETIO = web.AppKey("socketio", socketio.AsyncServer)


def build_app(settings: Settings, secrets: Secrets, config_path: Path | None = None,
              load: Callable[[Path], Settings] = load_settings) -> web.Application:
    """`load` re-reads `config_path` on reload; the CLI passes one that keeps its --host/--port."""
    holder = ConfigHolder(settings)
    runtime = Runtime(secrets=secrets, config_path=config_path, load=load)
    auth_middleware = make_auth_middleware(lambda: runtime.secrets.secret_key or "")
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, cors_middleware, error_middleware,
                     auth_middleware, body_limit_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[CONFIG] = holder
    app[METRICS] = Metrics()
    app[RUNTIME] = runtime
    app[RATE_LIMITER] = RateLimiter(lambda: holder.current.rate_limits)
    app[health.READINESS] = {}
    sio = create_socketio(settings, secrets.redis_password)
    sio.attach(app)
    app[SOCKETIO] = sio
    health.add_routes(app)
    add_api(app)
    pages.add_routes(app)
    edge = EdgeContext(database=lambda: runtime.db, media=lambda: _media_of(runtime), settings=lambda: holder.current,
                       secret_key=lambda: runtime.secrets.secret_key or "",
                       ice_servers=lambda user: ice_servers(holder.current.media, runtime.secrets.turn_secret, user),
                       bus=lambda: runtime.bus)
    runtime.media_listeners.append(add_edge(app, edge, runtime.job_handlers, sio))
    hls = HlsService(lambda: holder.current, edge.media, edge.database, lambda: _bus_of(runtime))
    hls_routes.add_routes(app, hls)
    runtime.media_listeners.append(hls.on_media_event)
    holder.subscribe(lambda new, _result: configure_logging(new.logging, runtime.secrets.values()))
    holder.subscribe(lambda _new, _result: app[METRICS].config_reloads.labels("applied").inc())
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_media)
    app.on_shutdown.append(_close_socketio)
    app.on_startup.append(_freeze_heap)
    return app


YOUNG_COLLECTION_THRESHOLD = 50_000
"""Net container allocations between young garbage collections (CPython's default is 700)."""


async def _freeze_heap(_app: web.Application) -> None:
    """Everything loaded at start-up lives as long as the process: move it out of the garbage collector's
    reach, so a full collection walks only what requests allocate (a room broadcast to thousands of sockets
    otherwise pays for walking the whole heap, SQLAlchemy and aiortc included, every few broadcasts).

    And collect less often: nearly everything a request allocates dies by reference counting, but at
    thousands of requests a second CPython's default threshold ran a young collection every few requests
    and a full one (40-60 ms, the loop stalled) every second. In a flash sale that was a fifth of the
    server's CPU; with this threshold it is a few percent (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


async def _services(app: web.Application) -> AsyncIterator[None]:
    runtime, holder = app[RUNTIME], app[CONFIG]
    settings = holder.current
    runtime.secrets = ensure_secret_key(settings, runtime.secrets)
    database = Database(settings.database, runtime.secrets.database_password)
    if settings.database.migrate_on_start:
        await migrate(database)
    await _ensure_first_admin(database)
    bus = create_bus(settings, runtime.secrets.redis_password)
    relay = OutboxRelay(database, bus, lambda: holder.current.events)
    jobs = JobRunner(database, runtime.job_handlers, lambda: holder.current.jobs)
    runtime.database, runtime.bus = database, bus
    app[health.READINESS]["database"] = database.ping
    limits_redis = None
    if settings.redis.url:
        app[health.READINESS]["redis"] = bus.ping
        limits_redis = redis_client(settings.redis.url, runtime.secrets.redis_password)
        app[RATE_LIMITER].counters = RedisCounters(limits_redis)  # one count across the nodes
    relay.start()
    jobs.start()
    watch_task = None
    if runtime.config_path is not None:
        runtime.watcher = ConfigWatcher(
            runtime.config_path, holder, load=runtime.load,
            on_refused=lambda _problems: app[METRICS].config_reloads.labels("refused").inc())
        watch_task = asyncio.create_task(runtime.watcher.run(), name="config-watcher")
    logger.info("services started", extra={"database": database.url.get_backend_name(),
                                           "bus": type(bus).__name__})
    try:
        yield
    finally:
        if watch_task is not None:
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        await jobs.stop()
        await relay.stop()
        await bus.close()
        if limits_redis is not None:
            app[RATE_LIMITER].counters = MemoryCounters()
            await limits_redis.aclose()
        await database.close()
        logger.info("services stopped")


async def _media(app: web.Application) -> AsyncIterator[None]:
    """The media worker processes: started with the web process, restarted if they die, stopped before it."""
    runtime, settings = app[RUNTIME], app[CONFIG].current
    media = MediaRouter.create(settings.media, settings.logging)
    for listener in runtime.media_listeners:
        media.subscribe(listener)
    await media.start()
    runtime.media = media
    app[health.READINESS]["media"] = media.check
    try:
        yield
    finally:
        await app[hls_routes.HLS].close()  # last segments and recordings finalised while media still runs
        runtime.media = None
        await media.stop()


def _bus_of(runtime: Runtime) -> Bus:
    if runtime.bus is None:
        raise RuntimeError("the event bus is used before the application started")
    return runtime.bus


def _media_of(runtime: Runtime) -> MediaControl:
    if runtime.media is None:
        raise MediaError("media_unavailable", "the media workers are not running", 503)
    return runtime.media


async def _ensure_first_admin(database: Database) -> None:
    """PINSTREAM_ADMIN_EMAIL and PINSTREAM_ADMIN_PASSWORD create the first admin once (a no-op later)."""
    email, password = os.environ.get("PINSTREAM_ADMIN_EMAIL"), os.environ.get("PINSTREAM_ADMIN_PASSWORD")
    if email and password:
        async with database.write() as session:
            await ensure_first_admin(session, email, password)


async def _close_socketio(app: web.Application) -> None:
    await app[SOCKETIO].shutdown()


def reload_config(app: web.Application) -> ReloadResult | None:
    """SIGHUP: re-read the config file now."""
    watcher = app[RUNTIME].watcher
    return watcher.reload() if watcher is not None else None


__all__ = ["RUNTIME", "SOCKETIO", "Runtime", "build_app", "reload_config"]
