"""The composition root of the web process: one aiohttp application with Socket.IO attached, and the
services it runs (database, event bus and outbox relay, durable jobs, config watcher)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import socketio
from aiohttp import web

from bus import Bus, OutboxRelay, create_bus
from config.loader import load_settings
from config.logs import configure_logging
from config.reload import ConfigHolder, ConfigWatcher, ReloadResult
from config.schema import Settings
from config.secrets import Secrets
from signaling.socketio import create_socketio
from store import Database, migrate
from store.jobs import Handler, JobRunner
from web import health
from web.errors import error_middleware
from web.metrics import Metrics
from web.middleware import (
    CONFIG,
    METRICS,
    body_limit_middleware,
    cors_middleware,
    metrics_middleware,
    request_id_middleware,
)

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What one web process runs; filled in at start-up, read by handlers through `RUNTIME`."""

    secrets: Secrets
    config_path: Path | None
    load: Callable[[Path], Settings] = load_settings
    job_handlers: dict[str, Handler] = field(default_factory=dict)
    database: Database | None = None
    bus: Bus | None = None
    watcher: ConfigWatcher | None = None

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the database is used before the application started")
        return self.database


RUNTIME = web.AppKey("runtime", Runtime)
SOCKETIO = web.AppKey("socketio", socketio.AsyncServer)


def build_app(settings: Settings, secrets: Secrets, config_path: Path | None = None,
              load: Callable[[Path], Settings] = load_settings) -> web.Application:
    """`load` re-reads `config_path` on reload; the CLI passes one that keeps its --host/--port."""
    holder = ConfigHolder(settings)
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, cors_middleware, error_middleware,
                     body_limit_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[CONFIG] = holder
    app[METRICS] = Metrics()
    app[RUNTIME] = Runtime(secrets=secrets, config_path=config_path, load=load)
    app[health.READINESS] = {}
    sio = create_socketio(settings, secrets.redis_password)
    sio.attach(app)
    app[SOCKETIO] = sio
    health.add_routes(app)
    holder.subscribe(lambda new, _result: configure_logging(new.logging, secrets.values()))
    holder.subscribe(lambda _new, _result: app[METRICS].config_reloads.labels("applied").inc())
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_close_socketio)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    runtime, holder = app[RUNTIME], app[CONFIG]
    settings = holder.current
    database = Database(settings.database, runtime.secrets.database_password)
    if settings.database.migrate_on_start:
        await migrate(database)
    bus = create_bus(settings, runtime.secrets.redis_password)
    relay = OutboxRelay(database, bus, lambda: holder.current.events)
    jobs = JobRunner(database, runtime.job_handlers, lambda: holder.current.jobs)
    runtime.database, runtime.bus = database, bus
    app[health.READINESS]["database"] = database.ping
    if settings.redis.url:
        app[health.READINESS]["redis"] = bus.ping
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
        await database.close()
        logger.info("services stopped")


async def _close_socketio(app: web.Application) -> None:
    await app[SOCKETIO].shutdown()


def reload_config(app: web.Application) -> ReloadResult | None:
    """SIGHUP: re-read the config file now."""
    watcher = app[RUNTIME].watcher
    return watcher.reload() if watcher is not None else None


__all__ = ["RUNTIME", "SOCKETIO", "Runtime", "build_app", "reload_config"]
