"""The gRPC process's Prometheus metrics (served by the web tier's /metrics with its own).

Under Gunicorn the master sets PROMETHEUS_MULTIPROC_DIR before starting this process, so
prometheus-client writes these figures to files in that directory and every web worker's
/metrics sums them with its own. Labels are bounded: six method names and the gRPC codes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GrpcMetrics:
    """RPCs answered and their durations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "onemodel_grpc_requests",
            "gRPC calls answered, by method and status code.",
            ("method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "onemodel_grpc_request_duration_seconds",
            "Time to answer a gRPC call, by method.",
            ("method",),
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Count one answered call."""
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)
