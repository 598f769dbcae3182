"""Debian's coturn as the TURN server of a test: TURN REST credentials (`use-auth-secret`) with a random shared
secret, UDP only, on a free port of one address, logging every allocation to a file the test can read."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

REALM = "pinstream.test"
# "session 001000000000000001: realm <pinstream.test> user <1767272400:abc>: incoming packet ALLOCATE
# processed, success" (coturn 4.6, logged with -v).
ALLOCATED = re.compile(r"user <([^>]*)>: incoming packet ALLOCATE processed, success")
_BINDING_REQUEST_TYPE = b"\x00\x01"
_BINDING_SUCCESS_TYPE = b"\x01\x01"
_MAGIC_COOKIE = b"\x21\x12\xa4\x42"


def free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class TurnServer:
    def __init__(self, directory: Path, address: str) -> None:
        self.directory = directory
        self.address = address
        self.port = free_udp_port(address)
        self.secret = secrets.token_urlsafe(24)
        self.log_path = directory / "coturn.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:{self.address}:{self.port}?transport=udp"

    def start(self, timeout: float = 15) -> TurnServer:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("turnserver is missing: install Debian's coturn (make system-deps does)")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "-n",  # no config file: only these options, whatever /etc/turnserver.conf says
            "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={REALM}",
            f"--listening-ip={self.address}", f"--relay-ip={self.address}", f"--listening-port={self.port}",
            "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780",
            # Peers are the media server on the namespace's own addresses. coturn 4.6 denies no private range
            # unless told to; allowing these explicitly keeps the test independent of that default.
            "--allow-loopback-peers", "--allowed-peer-ip=10.99.0.0-10.99.0.255",
            "-v", "--log-file=stdout", "--simple-log",
            f"--pidfile={self.directory / 'turnserver.pid'}", f"--userdb={self.directory / 'turndb'}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self._wait_until_answering(timeout)
        return self

    def _wait_until_answering(self, timeout: float) -> None:
        """Ready once a STUN Binding request on its port gets a success response."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"turnserver exited with {self.process.returncode}:\n{self.log()}")
                transaction = os.urandom(12)
                sock.sendto(_BINDING_REQUEST_TYPE + b"\x00\x00" + _MAGIC_COOKIE + transaction,
                            (self.address, self.port))
                try:
                    data = sock.recv(2048)
                except OSError:
                    continue
                if data[:2] == _BINDING_SUCCESS_TYPE and data[8:20] == transaction:
                    return
        raise TimeoutError(f"turnserver does not answer on {self.address}:{self.port} after {timeout}s:\n"
                           f"{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def allocations(self) -> list[str]:
        """Usernames of the successful allocations so far."""
        return ALLOCATED.findall(self.log())

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
