"""The servers under test: how to start each one, and the client arguments that publish to it and view it.

- pinstream: `run_server.py` with a temporary config and SQLite database, a host account and its stream key;
  WHIP `POST /whip/{room}` with the key, WHEP `POST /whep/{room}`.
- naive: bench/naive_relay_server.py, aiortc's MediaRelay with one encode per viewer.
- janus: Debian's `janus` with only the videoroom plugin and the HTTP transport, configured in a temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

from bench.media_clients import JANUS_ROOM
from bench.netns import Network
from bench.procstat import process_tree, start_time

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 40.0
ROOM = "bench"
HOST_EMAIL = "bench-host@example.com"


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class TargetUnavailable(RuntimeError):
    """The target cannot run here (not installed, needs a namespace): reported as skipped, not failed."""


class Target(ABC):
    name = ""
    description = ""

    def __init__(self, network: Network, workdir: Path) -> None:
        self.network = network
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @abstractmethod
    def publish_args(self) -> list[str]:
        """Arguments for the publisher process to reach this server."""

    @abstractmethod
    def view_args(self, feed: int | None) -> list[str]:
        """Arguments for a viewer process to reach this server."""

    @abstractmethod
    async def start(self) -> None:
        """Start the server and wait until it accepts publishers."""

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            # Same process group as the bench: a signal to the bench's group reaches the server too.
            self.process = subprocess.Popen(argv, cwd=self.workdir, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **(env or {})})

    async def _wait_http(self, url: str, limit_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                await asyncio.to_thread(_http_ok, url)
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not answering {url} after {limit_s:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; then whatever the server started and left behind (its workers)."""
        if self.process is None or self.process.poll() is not None:
            return
        descendants = [(pid, start_time(pid)) for pid in process_tree(self.process.pid)[1:]]
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        for pid, started in descendants:
            if started is not None and start_time(pid) == started:  # still that process, not a reused pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def _http_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as response:
        if response.status != 200:
            raise OSError(f"{url}: {response.status}")


class NaiveTarget(Target):
    name = "naive"
    description = "aiortc MediaRelay, one encode per viewer"

    async def start(self) -> None:
        address = self.network.server_address
        self.port = free_port(address)
        self._spawn([sys.executable, str(ROOT / "bench" / "naive_relay_server.py"), "--host", address,
                     "--port", str(self.port), "--ice-address", address])
        await self._wait_http(f"http://{address}:{self.port}/healthz")

    def publish_args(self) -> list[str]:
        return ["--mode", "whip", "--url", f"http://{self.network.server_address}:{self.port}/publish"]

    def view_args(self, feed: int | None) -> list[str]:
        return ["--mode", "whep", "--url", f"http://{self.network.server_address}:{self.port}/view"]


JANUS_CONFIG = """general: {{
    configs_folder = "{configs}"
    plugins_folder = "{lib}/plugins"
    transports_folder = "{lib}/transports"
    events_folder = "{lib}/events"
    loggers_folder = "{lib}/loggers"
    debug_level = 3
    session_timeout = 60
    interface = "{address}"
}}
certificates: {{
}}
media: {{
    rtp_port_range = "30000-40000"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{address}"
    ignore_mdns = true
}}
plugins: {{
    disable = "{disabled_plugins}"
}}
transports: {{
    disable = "{disabled_transports}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
"""

JANUS_HTTP = """general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "{address}"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
cors: {{
}}
"""

JANUS_VIDEOROOM = """general: {{
}}
room-{room}: {{
    description = "Pinstream bench"
    publishers = 1
    bitrate = 0
    fir_freq = 0
    audiocodec = "opus"
    videocodec = "vp8"
    notify_joining = false
    record = false
}}
"""


class JanusTarget(Target):
    name = "janus"
    description = "Janus videoroom (Debian janus)"

    def _library(self) -> Path:
        for candidate in Path("/usr/lib").glob("*/janus"):
            if (candidate / "plugins" / "libjanus_videoroom.so").exists():
                return candidate
        raise TargetUnavailable("Janus's videoroom plugin is not installed (Debian package janus)")

    def _disable(self, folder: Path, keep: str) -> str:
        return ",".join(sorted(path.name for path in folder.glob("libjanus_*.so") if path.name != keep))

    async def start(self) -> None:
        binary = shutil.which("janus")
        if binary is None:
            raise TargetUnavailable("janus is not installed (apt-get install janus)")
        if self.network.namespace is None:
            raise TargetUnavailable("Janus never offers loopback candidates: it needs the bench's namespace (root)")
        lib = self._library()
        address = self.network.server_address
        self.port = free_port(address)
        configs = self.workdir / "conf"
        configs.mkdir(exist_ok=True)
        (configs / "janus.jcfg").write_text(JANUS_CONFIG.format(
            configs=configs, lib=lib, address=address,
            disabled_plugins=self._disable(lib / "plugins", "libjanus_videoroom.so"),
            disabled_transports=self._disable(lib / "transports", "libjanus_http.so")))
        (configs / "janus.transport.http.jcfg").write_text(JANUS_HTTP.format(port=self.port, address=address))
        (configs / "janus.plugin.videoroom.jcfg").write_text(JANUS_VIDEOROOM.format(room=JANUS_ROOM))
        self._spawn([binary, "--config", str(configs / "janus.jcfg"), "--configs-folder", str(configs),
                     "--disable-colors"])
        await self._wait_http(f"http://{address}:{self.port}/janus/info")

    def _url(self) -> str:
        return f"http://{self.network.server_address}:{self.port}/janus"

    def publish_args(self) -> list[str]:
        return ["--mode", "janus", "--url", self._url()]

    def view_args(self, feed: int | None) -> list[str]:
        if feed is None:
            raise RuntimeError("the Janus publisher reported no feed id")
        return ["--mode", "janus", "--url", self._url(), "--feed", str(feed)]


class PinstreamTarget(Target):
    name = "pinstream"
    description = "Pinstream run_server.py, WHIP in, WHEP out"

    def _config(self) -> str:
        data = self.workdir / "data"
        return "\n".join([
            f"data_dir: {data}",
            "server:",
            f"  host: {self.network.server_address}",
            f"  port: {self.port}",
            "database:",
            f"  url: sqlite+aiosqlite:///{data / 'pinstream.db'}",
            "media:",
            "  ice:",
            f"    host_addresses: [{self.network.server_address}]",
            "hls:",
            "  enabled: false",
            f"  directory: {data / 'hls'}",
            "logging:",
            "  level: warning",
            "  access_log: false",
            "",
        ])

    def _admin(self, *args: str) -> str:
        result = subprocess.run([sys.executable, str(ROOT / "run_server.py"), *args, "--config", str(self.config)],
                                cwd=self.workdir, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"run_server.py {args[0]} failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    async def start(self) -> None:
        self.port = free_port(self.network.server_address)
        self.config = self.workdir / "pinstream.yml"
        self.config.write_text(self._config())
        password = self.workdir / "password"
        password.write_text("bench-password-not-secret-1\n")
        await asyncio.to_thread(self._admin, "create-user", HOST_EMAIL, "--role", "host",
                                "--password-file", str(password))
        self.stream_key = (await asyncio.to_thread(self._admin, "stream-key", HOST_EMAIL)).splitlines()[-1].strip()
        self._spawn([sys.executable, str(ROOT / "run_server.py"), "--config", str(self.config)],
                    env={"PYTHONUNBUFFERED": "1"})
        await self._wait_http(f"http://{self.network.server_address}:{self.port}/healthz")

    def _base(self) -> str:
        return f"http://{self.network.server_address}:{self.port}"

    def publish_args(self) -> list[str]:
        return ["--mode", "whip", "--url", f"{self._base()}/whip/{ROOM}", "--bearer", self.stream_key]

    def view_args(self, feed: int | None) -> list[str]:
        return ["--mode", "whep", "--url", f"{self._base()}/whep/{ROOM}"]


TARGETS: dict[str, type[Target]] = {"pinstream": PinstreamTarget, "naive": NaiveTarget, "janus": JanusTarget}


async def stop_quietly(target: Target) -> None:
    with contextlib.suppress(ProcessLookupError):
        await target.stop()
