"""Hot reload applies live keys, holds restart-only keys, survives rename-saves and refuses invalid files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from config import ConfigHolder, ConfigWatcher, load_settings
from config.reload import merge_live


def _write(path: Path, text: str, by_rename: bool = False) -> None:
    if by_rename:  # what vim, VS Code and most editors do
        temporary = path.with_suffix(".swp")
        temporary.write_text(text)
        os.replace(temporary, path)
    else:
        path.write_text(text)


def test_merge_keeps_restart_keys_and_applies_live_ones() -> None:
    old = load_settings()
    new = old.model_copy(update={
        "server": old.server.model_copy(update={"port": 9999, "cors_origins": ["https://a.example"]}),
    })
    merged, result = merge_live(old, new)
    assert result.applied == ["server.cors_origins"]
    assert result.needs_restart == ["server.port"]
    assert merged.server.port == old.server.port
    assert merged.server.cors_origins == ["https://a.example"]


@pytest.mark.parametrize("by_rename", [False, True], ids=["in-place", "rename"])
async def test_watcher_applies_a_safe_change(tmp_path: Path, by_rename: bool) -> None:
    path = tmp_path / "pinstream.yml"
    _write(path, "chat:\n  max_length: 100\n")
    holder = ConfigHolder(load_settings(path))
    seen = []
    holder.subscribe(lambda settings, result: seen.append(result))
    watcher = ConfigWatcher(path, holder, poll_seconds=0.02, debounce_seconds=0.05)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.05)
        _write(path, "chat:\n  max_length: 200\nserver:\n  port: 9000\n", by_rename)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert holder.current.chat.max_length == 200
    assert holder.current.server.port == 8080
    assert seen[0].applied == ["chat.max_length"] and seen[0].needs_restart == ["server.port"]


async def test_invalid_file_keeps_the_old_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pinstream.yml"
    _write(path, "chat:\n  max_length: 100\n")
    holder = ConfigHolder(load_settings(path))
    refused: list[list[str]] = []
    watcher = ConfigWatcher(path, holder, on_refused=refused.append)
    _write(path, "chat:\n  max_length: -5\n  colour: red\n")
    assert watcher.reload() is None
    assert holder.current.chat.max_length == 100
    assert len(refused) == 1 and any("chat.colour: unknown key" in p for p in refused[0])
    assert "config reload refused" in caplog.text
    _write(path, "chat:\n  max_length: 300\n")
    result = watcher.reload()
    assert result is not None and result.applied == ["chat.max_length"]
    assert holder.current.chat.max_length == 300
