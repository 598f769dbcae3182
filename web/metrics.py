"""Prometheus metrics of one application, on its own registry so several apps can share a process."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

CACHED_LABEL_SETS = 1000
"""(method, route, status) sets whose metric children are remembered: the routes are few, odd methods are not."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("pinstream_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("pinstream_http_request_duration_seconds", "HTTP request duration",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.config_reloads = Counter("pinstream_config_reloads_total", "Config reloads by outcome",
                                      ["outcome"], registry=self.registry)
        self.ready = Gauge("pinstream_ready", "1 while every dependency answers", registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # looking a labelled child up costs more than counting in it
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._children) < CACHED_LABEL_SETS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
