"""The web tier's Prometheus metrics, summed across Gunicorn workers."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_mode() -> bool:
    """Return whether prometheus-client stores values in files shared by Gunicorn workers."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class WebMetrics:
    """Request, error and reconnect metrics of the web workers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "onemodel_http_requests",
            "HTTP requests answered, by route, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "onemodel_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ("route",),
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.errors = Counter(
            "onemodel_http_errors",
            "Error answers, by error code (invalid_image, overloaded, timeout, ...).",
            ("code",),
            registry=self.registry,
        )
        self.reconnects = Counter(
            "onemodel_model_server_reconnects",
            "Times a worker re-established its model-server connection.",
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self, model_server_text: bytes) -> bytes:
        """Return the exposition: every worker's figures (summed) plus the model server's."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
        else:
            text = generate_latest(self.registry)
        return text + model_server_text


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (called from Gunicorn's child_exit hook)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def model_server_up_text(up: bool) -> bytes:
    """Return the exposition of ``onemodel_model_server_up`` (1 if it answered the scrape)."""
    # Written by hand: a Gauge object would create per-worker files in multiprocess mode.
    return (
        "# HELP onemodel_model_server_up 1 if the model server answered the scrape.\n"
        "# TYPE onemodel_model_server_up gauge\n"
        f"onemodel_model_server_up {1.0 if up else 0.0}\n"
    ).encode()
