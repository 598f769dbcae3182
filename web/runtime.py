"""What one web process runs, reachable from every handler through `request.app[RUNTIME]`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bus import Bus
from config.loader import load_settings
from config.reload import ConfigWatcher
from config.schema import Settings
from config.secrets import Secrets
from media.api import MediaControl, MediaEvent
from store import Database
from store.jobs import Handler


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
    media: MediaControl | None = None
    """The media workers (issue 4), through one router; None until started."""
    media_listeners: list[Callable[[MediaEvent], None]] = field(default_factory=list)
    """Registered while building the app; each gets every media event (on the loop: must not block)."""

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the database is used before the application started")
        return self.database


RUNTIME = web.AppKey("runtime", Runtime)
