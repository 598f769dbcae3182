"""Hot reload: re-read the file on SIGHUP or when it changes, apply live keys, keep the rest until a restart.

An invalid new file never stops the server: it is logged as one error and the last good settings stay.
The file is watched by polling its (inode, size, mtime) signature rather than with inotify, so editors that
save by writing a temporary file and renaming it over the original are seen like any other save.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.loader import ConfigError, load_settings
from config.schema import Settings, live_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    applied: list[str]
    """Changed keys now in effect."""
    needs_restart: list[str]
    """Changed keys that keep their old value until the server restarts."""


Listener = Callable[[Settings, ReloadResult], None]


class ConfigHolder:
    """The settings in force; parts that honour live keys read `current` or subscribe to changes."""

    def __init__(self, settings: Settings) -> None:
        self.current = settings
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def replace(self, settings: Settings, result: ReloadResult) -> None:
        self.current = settings
        for listener in self._listeners:
            try:
                listener(settings, result)
            except Exception:
                logger.exception("config listener failed")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key path → leaf value; lists are leaves."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def merge_live(old: Settings, new: Settings) -> tuple[Settings, ReloadResult]:
    """New values for changed live keys, old values for changed restart-only keys."""
    old_flat, new_flat = flatten(old.model_dump()), flatten(new.model_dump())
    changed = sorted(key for key in new_flat if new_flat[key] != old_flat.get(key))
    live = live_keys()
    applied = [key for key in changed if key in live]
    needs_restart = [key for key in changed if key not in live]
    merged = new.model_dump()
    for key in needs_restart:
        *parents, leaf = key.split(".")
        section = merged
        for part in parents:
            section = section[part]
        section[leaf] = old_flat[key]
    return Settings.model_validate(merged), ReloadResult(applied, needs_restart)


class ConfigWatcher:
    def __init__(self, path: str | Path, holder: ConfigHolder, poll_seconds: float = 0.5,
                 debounce_seconds: float = 0.3, load: Callable[[Path], Settings] = load_settings,
                 on_refused: Callable[[list[str]], None] | None = None) -> None:
        self.path = Path(path)
        self.holder = holder
        self.load = load
        self.on_refused = on_refused
        self.poll_seconds = poll_seconds
        self.debounce_seconds = debounce_seconds
        self._signature = self._read_signature()

    def _read_signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def reload(self) -> ReloadResult | None:
        """Re-read now (SIGHUP). Returns what changed, or None when the file was refused."""
        self._signature = self._read_signature()
        try:
            new = self.load(self.path)
        except ConfigError as exc:
            logger.error("config reload refused, keeping the running configuration",
                         extra={"problems": exc.problems, "path": str(self.path)})
            if self.on_refused is not None:
                self.on_refused(exc.problems)
            return None
        merged, result = merge_live(self.holder.current, new)
        if result.applied or result.needs_restart:
            self.holder.replace(merged, result)
            logger.info("config reloaded", extra={"applied": result.applied,
                                                  "needs_restart": result.needs_restart})
        return result

    async def run(self) -> None:
        """Poll the file; once a change has been stable for the debounce time, reload it."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            signature = self._read_signature()
            if signature is None or signature == self._signature:
                continue  # unchanged, or mid-rename: look again next time
            while True:
                await asyncio.sleep(self.debounce_seconds)
                settled = self._read_signature()
                if settled == signature:
                    break
                signature = settled
            if signature is not None:
                self.reload()
