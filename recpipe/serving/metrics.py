"""Prometheus metrics of one app: requests and latency per endpoint, fallbacks, reloads and
the bundle serving.

Each app has its own registry (tests build many apps). Under several uvicorn workers
(``recpipe serve --workers N``) ``PROMETHEUS_MULTIPROC_DIR`` is set by the command and
``/metrics`` sums every worker's values, whichever worker answers the scrape.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # the *_created series only double what a scrape shows

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's metrics and an ASGI middleware-friendly ``observe``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recpipe_requests",
            "HTTP requests by endpoint (route template), method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "recpipe_request_seconds",
            "request latency by endpoint (route template)",
            ["endpoint"],
            buckets=BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "recpipe_fallbacks",
            "answers that fell back to a non-personal list, by endpoint and kind",
            ["endpoint", "kind"],
            registry=r,
        )
        self.reloads = Counter(
            "recpipe_bundle_reloads", "bundle loads by result (ok, error)", ["result"], registry=r
        )
        self.bundle = Gauge(
            "recpipe_bundle_info",
            "1 for the bundle serving (label bundle_id)",
            ["bundle_id"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self._bundle_id: str | None = None

    def set_bundle(self, bundle_id: str) -> None:
        if self._bundle_id is not None and self._bundle_id != bundle_id:
            self.bundle.remove(self._bundle_id)
        self.bundle.labels(bundle_id).set(1)
        self._bundle_id = bundle_id

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than ``BaseHTTPMiddleware``): counts and times every
    HTTP request under its route template (``/v1/users/{user_id}/recommendations``), so ids
    never become label values; unmatched paths count as ``unmatched``."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.latency.labels(endpoint).observe(time.perf_counter() - start)
            m.requests.labels(endpoint, scope["method"], str(status)).inc()
            fallback = scope.get("state", {}).get("fallback")
            if fallback:
                m.fallbacks.labels(endpoint, fallback).inc()
