#!/usr/bin/env python3
"""SFU fan-out benchmark: one publisher of pre-encoded 720p VP8 + Opus, N viewers that count frames.

    python bench/sfu_fanout.py [--viewers N] [--target pinstream|naive|janus|all] [--seconds S]

For each target server: start it, publish to it (bench/media_clients.py: aiortc packetising pre-encoded media,
no encoder), connect N viewers spread over several processes (frames counted, never decoded), and, in the same
phase, one viewer straight from the publisher (the direct peer-to-peer baseline). After a warm-up, over a
steady-state window of S seconds, it measures:

- server CPU seconds per viewer-second, summed over the server's whole process tree (utime + stime + reaped
  children, from /proc/PID/stat), and viewers per core (its inverse);
- frames delivered complete / frames sent in the window times N;
- p50 / p99 publisher-to-viewer latency (send of a frame to arrival of its last packet), and the same through
  the direct link, and their difference (added latency);
- server RSS per viewer (RSS with the viewers minus RSS with the publisher alone, divided by N).

Human-readable lines first; the last line is one JSON object with every figure (and ratios against Janus when
Janus ran in the same run).

Network: as root the bench re-runs itself inside a network namespace it creates (bench/netns.py), with a veth
pair on 10.99.1.0/24: every packet stays inside it. Otherwise everything runs on loopback (Janus is then
skipped: it never offers loopback candidates). Every process started has a hard time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.analysis import delivery, percentile  # noqa: E402
from bench.media_files import prepare_media  # noqa: E402
from bench.netns import Network, can_create_namespace, current_network, run_in_namespace  # noqa: E402
from bench.procstat import cpu_seconds, rss_bytes  # noqa: E402
from bench.targets import TARGETS, Target, TargetUnavailable, stop_quietly  # noqa: E402

READY_TIMEOUT_S = 45.0
DONE_TIMEOUT_S = 30.0


# -------------------------------------------------------------------------------------------- client runs


class ClientProcess:
    """One bench/media_clients.py process: JSON lines on stdout, "stop" on stdin, results in a file."""

    def __init__(self, name: str, workdir: Path, argv: list[str]) -> None:
        self.name = name
        self.out = workdir / f"{name}.json"
        self.log = workdir / f"{name}.log"
        self.argv = [*argv, "--out", str(self.out)]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = await asyncio.to_thread(self.log.open, "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.media_clients", *self.argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log)
        finally:
            log.close()

    async def event(self, limit_s: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + limit_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no event after {limit_s:.0f}s; {self.log_tail()}")
            line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(f"{self.name} exited ({await self.process.wait()}); {self.log_tail()}")
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict) and "event" in event:
                    return event

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> dict[str, Any] | None:
        """Ask it to stop, wait for it to write its results, return them (None if it never did)."""
        if self.process is None:
            return None
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.write(b"stop\n")
                await self.process.stdin.drain()
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), DONE_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        try:
            result: dict[str, Any] = json.loads(self.out.read_text())
            return result
        except (OSError, json.JSONDecodeError):
            return None

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


@dataclass
class Settings:
    viewers: int
    naive_viewers: int
    seconds: float
    warmup: float
    per_process: int
    ingest_seconds: float
    media: Path
    workdir: Path


@dataclass
class Phase:
    target: Target
    viewers: int
    clients: list[ClientProcess] = field(default_factory=list)


async def run_target(name: str, settings: Settings, network: Network) -> dict[str, Any]:
    target = TARGETS[name](network, settings.workdir)
    viewers = settings.naive_viewers if name == "naive" else settings.viewers
    phase = Phase(target, viewers)
    limit = settings.warmup + settings.seconds + settings.ingest_seconds + 120 + viewers
    client_dir = target.workdir
    try:
        try:
            await target.start()
        except TargetUnavailable as exc:
            return {"status": "skipped", "reason": str(exc)}
        publisher = ClientProcess("publisher", client_dir, [
            "publish", *target.publish_args(), "--media", str(settings.media),
            "--host-address", network.client_address, "--max-seconds", str(limit)])
        phase.clients.append(publisher)
        await publisher.start()
        ready = await publisher.event(READY_TIMEOUT_S)
        if ready["event"] != "ready":
            raise RuntimeError(f"publisher: {ready.get('error')}; server log: {target.log_tail(5)}")

        # The publisher alone: what ingest costs, and the memory before any viewer.
        await asyncio.sleep(1.0)
        cpu_a, t_a = cpu_seconds([target.pid]), time.monotonic()
        await asyncio.sleep(settings.ingest_seconds)
        ingest_cpu = (cpu_seconds([target.pid]) - cpu_a) / (time.monotonic() - t_a)
        rss_base = rss_bytes([target.pid])

        viewer_procs = []
        for index in range(math.ceil(viewers / settings.per_process)):
            count = min(settings.per_process, viewers - index * settings.per_process)
            viewer_procs.append(ClientProcess(f"viewers-{index}", client_dir, [
                "view", *target.view_args(ready.get("feed")), "--count", str(count), "--label", f"viewers-{index}",
                "--host-address", network.client_address, "--max-seconds", str(limit)]))
        p2p = ClientProcess("p2p", client_dir, [
            "view", "--mode", "whep", "--url", ready["p2p_url"], "--count", "1", "--label", "p2p",
            "--host-address", network.client_address, "--max-seconds", str(limit)])
        phase.clients.extend([*viewer_procs, p2p])
        await asyncio.gather(*(client.start() for client in [*viewer_procs, p2p]))
        readies = await asyncio.gather(*(client.event(READY_TIMEOUT_S + viewers) for client in [*viewer_procs, p2p]))
        connected = sum(event.get("connected", 0) for event in readies[:-1])
        errors = sorted({error for event in readies for error in event.get("errors", [])})
        if not readies[-1].get("connected"):
            raise RuntimeError(f"the direct P2P viewer did not connect: {errors}")

        await asyncio.sleep(settings.warmup)
        roots = [target.pid]
        client_pids = [client.process.pid for client in phase.clients if client.process is not None]
        cpu0, clients0, t0 = cpu_seconds(roots), cpu_seconds(client_pids), time.monotonic()
        rss_peak = 0
        while (remaining := t0 + settings.seconds - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, remaining))
            rss_peak = max(rss_peak, rss_bytes(roots))
        cpu1, clients1, t1 = cpu_seconds(roots), cpu_seconds(client_pids), time.monotonic()
        await asyncio.sleep(1.0)  # frames sent at the end of the window are still on their way

        results = await asyncio.gather(*(client.stop() for client in [*viewer_procs, p2p]))
        published = await publisher.stop()
        if published is None:
            raise RuntimeError(f"the publisher wrote no results; {publisher.log_tail()}")
        frames = published["video"]
        origins = published["origins"]
        requests = published.get("keyframe_requests", [])
        target_viewers = [viewer for result in results[:-1] if result for viewer in result["viewers"]]
        p2p_viewers = results[-1]["viewers"] if results[-1] else []
        served = delivery(frames, origins.get("server"), target_viewers, (t0, t1), viewers).summary()
        direct = delivery(frames, origins.get("p2p"), p2p_viewers, (t0, t1), 1).summary()
        window = t1 - t0
        cpu = cpu1 - cpu0
        per_viewer = cpu / (viewers * window)
        figures: dict[str, Any] = {
            "status": "ok",
            "server": target.description,
            "viewers": viewers,
            "viewers_connected": connected,
            "connect_errors": errors[:5],
            "window_seconds": round(window, 3),
            "server_cpu_seconds": round(cpu, 3),
            "server_cpu_cores": round(cpu / window, 3),
            "cpu_ms_per_viewer_second": round(per_viewer * 1000, 3),
            "viewers_per_core": round(1 / per_viewer, 1) if per_viewer > 0 else None,
            "ingest_cpu_ms_per_second": round(ingest_cpu * 1000, 2),
            "marginal_cpu_ms_per_viewer_second": round(max(0.0, cpu / window - ingest_cpu) / viewers * 1000, 3),
            "client_cpu_cores": round((clients1 - clients0) / window, 3),
            "keyframe_requests_at_publisher": len(requests),
            "keyframe_requests_in_window": sum(t0 <= when < t1 for when in requests),
            "rss_mb": round(rss_peak / 2**20, 1),
            "rss_kb_per_viewer": round(max(0, rss_peak - rss_base) / viewers / 1024, 1),
            **served,
            "p2p": direct,
        }
        latency, p2p_latency = served["latency_ms"], direct["latency_ms"]
        figures["added_latency_ms"] = {
            key: round(latency[key] - p2p_latency[key], 2)
            if latency[key] is not None and p2p_latency[key] is not None else None for key in ("p50", "p99")}
        return figures
    except Exception as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await asyncio.gather(*(client.kill() for client in phase.clients))
        await stop_quietly(target)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float | int) else f"{value}{unit}"


def report_line(name: str, figures: dict[str, Any]) -> str:
    if figures["status"] != "ok":
        return f"{name:10s} {figures['status']}: {figures.get('reason') or figures.get('error')}"
    latency, added, p2p = figures["latency_ms"], figures["added_latency_ms"], figures["p2p"]["latency_ms"]
    ratio = figures["delivery_ratio"]
    return (f"{name:10s} {figures['viewers']:3d} viewers ({figures['viewers_connected']} connected)  "
            f"cpu {_fmt(figures['cpu_ms_per_viewer_second'], ' ms', 2)}/viewer-s "
            f"({_fmt(figures['viewers_per_core'])} viewers/core, ingest {_fmt(figures['ingest_cpu_ms_per_second'])}"
            f" ms/s)  frames {_fmt(ratio * 100 if ratio is not None else None, '%', 2)}  "
            f"latency p50 {_fmt(latency['p50'], ' ms')} p99 {_fmt(latency['p99'], ' ms')} "
            f"(p2p {_fmt(p2p['p50'], '')}/{_fmt(p2p['p99'], ' ms')}, added {_fmt(added['p50'], '')}/"
            f"{_fmt(added['p99'], ' ms')})  rss {_fmt(figures['rss_kb_per_viewer'], ' KB')}/viewer  "
            f"timestamps {figures['timestamps']}")


def ratios_vs_janus(targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    janus = targets.get("janus", {})
    if janus.get("status") != "ok":
        return {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    ratios = {}
    for name, figures in targets.items():
        if name != "janus" and figures.get("status") == "ok":
            ratios[name] = {
                "cpu_per_viewer_second": ratio(figures["cpu_ms_per_viewer_second"], janus["cpu_ms_per_viewer_second"]),
                "rss_per_viewer": ratio(figures["rss_kb_per_viewer"], janus["rss_kb_per_viewer"]),
                "latency_p99": ratio(figures["latency_ms"]["p99"], janus["latency_ms"]["p99"]),
                "delivery": ratio(figures["delivery_ratio"], janus["delivery_ratio"]),
            }
    return ratios


async def run(args: argparse.Namespace, network: Network) -> dict[str, Any]:
    names = ["pinstream", "naive", "janus"] if args.target == "all" else [args.target]
    workdir = Path(tempfile.mkdtemp(prefix="pinstream-bench-"))
    try:
        media = await asyncio.to_thread(prepare_media, args.media_seconds)
        warmup = args.warmup if args.warmup is not None else min(4.0, max(2.0, args.seconds / 2))
        settings = Settings(viewers=args.viewers, naive_viewers=args.naive_viewers or min(args.viewers, 2),
                            seconds=args.seconds, warmup=warmup, per_process=args.per_process,
                            ingest_seconds=args.ingest_seconds, media=media, workdir=workdir)
        targets: dict[str, dict[str, Any]] = {}
        for name in names:
            print(f"# {name}: starting ({settings.naive_viewers if name == 'naive' else settings.viewers} viewers, "
                  f"{warmup:.0f} s warm-up, {args.seconds:.0f} s measured)", flush=True)
            targets[name] = await run_target(name, settings, network)
            print(report_line(name, targets[name]), flush=True)
        pooled = [figures["p2p"]["latency_ms"] for figures in targets.values() if figures.get("status") == "ok"]
        return {
            "bench": "sfu_fanout",
            "network": network.kind,
            "cpus": os.cpu_count(),
            "viewers": args.viewers,
            "seconds": args.seconds,
            "warmup_seconds": warmup,
            "media": {"video": "VP8 1280x720 30 fps ~1.4 Mbps, keyframe every 2 s", "audio": "Opus 48 kb/s"},
            "targets": targets,
            "p2p_latency_ms": {"p50": percentile([p["p50"] for p in pooled if p["p50"] is not None], 0.5),
                               "p99": percentile([p["p99"] for p in pooled if p["p99"] is not None], 0.5)},
            "ratios_vs_janus": ratios_vs_janus(targets),
        }
    finally:
        if args.keep_temp:
            print(f"# work directory kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=20, help="viewers per target (default 20)")
    parser.add_argument("--target", choices=("pinstream", "naive", "janus", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured steady-state window (default 20)")
    parser.add_argument("--warmup", type=float, help="seconds after the viewers connect before measuring")
    parser.add_argument("--naive-viewers", type=int,
                        help="viewers for the re-encode target, which saturates the machine (default min(N, 2))")
    parser.add_argument("--per-process", type=int, default=10, help="viewers per client process (default 10)")
    parser.add_argument("--ingest-seconds", type=float, default=2.0,
                        help="publisher-only measurement before viewers join (default 2)")
    parser.add_argument("--media-seconds", type=int, default=12, help="length of the looped media (default 12)")
    parser.add_argument("--loopback", action="store_true", help="no namespace even as root (Janus is skipped)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the work directory (logs, results)")
    args = parser.parse_args(argv)
    if args.viewers < 1 or args.seconds <= 0 or args.per_process < 1:
        parser.error("--viewers and --per-process must be at least 1, --seconds positive")
    return args


async def main_async(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    network = current_network()
    try:
        summary = await run(args, network)
    except (Exception, asyncio.CancelledError) as exc:
        # Still one JSON object as the last line, for whoever parses it.
        reason = "interrupted" if isinstance(exc, asyncio.CancelledError) else f"{type(exc).__name__}: {exc}"
        print(json.dumps({"bench": "sfu_fanout", "network": network.kind, "error": reason}), flush=True)
        return 130 if isinstance(exc, asyncio.CancelledError) else 1
    print(json.dumps(summary), flush=True)
    return 1 if any(figures["status"] == "error" for figures in summary["targets"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not current_network().namespace and not args.loopback and can_create_namespace():
        return run_in_namespace([sys.executable, str(Path(__file__).resolve()),
                                 *(sys.argv[1:] if argv is None else argv)])
    try:
        return asyncio.run(main_async(args))
    except asyncio.CancelledError:
        return 130


if __name__ == "__main__":
    sys.exit(main())
