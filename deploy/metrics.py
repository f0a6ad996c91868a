"""Prometheus metrics of the policy server: requests by path and status, latency, errors by reason, in flight.

An ASGI middleware records every request, including those refused before the route (bad Host, no token), so
``/metrics`` accounts for all traffic. Each app has its own registry: two apps in one process never share counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: Seconds; batch-1 inference is ~1-20 ms, parsing a nested-list image ~30 ms, the default timeout 10 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def set_error_reason(scope: Scope, reason: str) -> None:
    """Label the error a handler answers with (e.g. "invalid_observation"), for ``imitlab_request_errors_total``."""
    scope.setdefault("state", {})["error_reason"] = reason


class ServerMetrics:
    """The server's collectors in a private registry, and the text ``/metrics`` serves."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        """``paths``: the routes counted under their own label; anything else is counted as "other"."""
        self.paths = frozenset(paths)
        self.registry = CollectorRegistry()
        self.requests = Counter("imitlab_requests", "HTTP requests answered, by path, method and status.",
                                ("path", "method", "status"), registry=self.registry)
        self.errors = Counter("imitlab_request_errors", "Requests answered with an error (status >= 400), by reason.",
                              ("path", "reason"), registry=self.registry)
        self.latency = Histogram("imitlab_request_duration_seconds", "Time from request to complete response.",
                                 ("path",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("imitlab_requests_in_flight", "Requests being handled now.", registry=self.registry)

    def exposition(self) -> bytes:
        """The Prometheus text format of every collector."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request into ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        path = scope["path"] if scope["path"] in m.paths else "other"
        status = 500  # if the app raises before answering, the server answers 500
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            m.in_flight.dec()
            m.latency.labels(path).observe(time.perf_counter() - start)
            m.requests.labels(path, scope["method"], str(status)).inc()
            if status >= 400:
                reason = scope.get("state", {}).get("error_reason") or (
                    "internal" if status >= 500 else f"http_{status}")
                m.errors.labels(path, reason).inc()
