"""Where the benchmark's packets go: a network namespace the bench creates itself, or loopback.

As root, `run_in_namespace` creates `pinstream-bench-<pid>` holding loopback and a veth pair (SERVER_ADDRESS on
one end, CLIENT_ADDRESS on the other) that reaches nothing outside, runs the bench inside it and deletes it
afterwards, however the bench ends. Servers offer only SERVER_ADDRESS and clients only CLIENT_ADDRESS as ICE
host candidates. Without root every process runs on loopback and offers only 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from types import FrameType

NETNS_ENV = "PINSTREAM_BENCH_NETNS"
SERVER_ADDRESS = "10.99.1.1"
CLIENT_ADDRESS = "10.99.1.2"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Network:
    namespace: str | None
    server_address: str
    client_address: str

    @property
    def kind(self) -> str:
        return "netns" if self.namespace else "loopback"


def current_network() -> Network:
    """The network this process runs in: the bench's namespace when started by `run_in_namespace`."""
    namespace = os.environ.get(NETNS_ENV)
    if namespace:
        return Network(namespace, SERVER_ADDRESS, CLIENT_ADDRESS)
    return Network(None, LOOPBACK, LOOPBACK)


def can_create_namespace() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def run_in_namespace(argv: list[str]) -> int:
    """Run argv inside a fresh namespace and return its exit status; the namespace is always deleted."""
    name = f"pinstream-bench-{os.getpid()}"
    child: subprocess.Popen[bytes] | None = None

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _ip("netns", "add", name)
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        _ip("netns", "exec", name, "ip", "link", "add", "veth-srv", "type", "veth", "peer", "name", "veth-cli")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "veth-srv")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "veth-cli")
        _ip("netns", "exec", name, "ip", "link", "set", "veth-srv", "up")
        _ip("netns", "exec", name, "ip", "link", "set", "veth-cli", "up")
        # Janus (libnice) sends out of the interface it bound to, so a packet from 10.99.1.1 arrives on veth-cli
        # with a source address that is local to the namespace: the kernel drops such packets unless told not to.
        # These settings belong to the namespace alone.
        for interface in ("all", "default", "veth-srv", "veth-cli"):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                            f"net.ipv4.conf.{interface}.accept_local=1", f"net.ipv4.conf.{interface}.rp_filter=0"],
                           check=True, capture_output=True, timeout=30)
        child = subprocess.Popen(["ip", "netns", "exec", name, *argv], env={**os.environ, NETNS_ENV: name},
                                 start_new_session=True)
        return child.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if child is not None and child.poll() is None:
            # The bench's own process group: it forwards the stop to the servers and clients it started.
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
