"""Start `run_server.py` as a real process on a free port, as an admin would, and read its JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, directory: Path, config: str = "", env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.config_path = directory / "pinstream.yml"
        self.config_path.write_text(config)
        self.log_path = directory / "server.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "run_server.py"), "--config", str(self.config_path),
                 "--port", str(self.port)], cwd=self.directory, stdout=log, stderr=log, env=self.env)
        if wait:
            self.wait_until_healthy()
        return self

    def wait_until_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"server not healthy after {timeout}s:\n{self.log_path.read_text()}")

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"msg": line, "not_json": True})
        return entries

    def wait_for_log(self, message: str, timeout: float = 10, after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs()[after:]:
                if entry.get("msg") == message:
                    return entry
            time.sleep(0.05)
        raise TimeoutError(f"no log line {message!r}:\n{self.log_path.read_text()}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
