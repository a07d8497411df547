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
from prometheus_client.mmap_dict import MmapedDict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Label values come from a bounded set, whatever clients send: any other method is
# "other" (routes are rule templates or "unmatched"; codes are our errors' own).
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER = "other"
# Dead workers' counters and histograms are added to these files (kind_archive.db).
ARCHIVE = "archive"
_SUMMED_KINDS = ("counter", "histogram")
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

        self.replica_attempts = Counter(
            "onemodel_model_server_replica_attempts",
            "Predictions sent to each model-server replica (label: its slot in the pool, not "
            "its address), by outcome: ok, failover (tried another), error.",
            ("replica", "outcome"),
            registry=self.registry,
        )

    def count_replica_attempt(self, replica: str, outcome: str) -> None:
        """Count one prediction sent to a replica (the pool's on_attempt callback)."""
        self.replica_attempts.labels(replica, outcome).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, bounded_method(method), bounded_status(status)).inc()
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


def bounded_method(method: str) -> str:
    """Return the method label: a standard method, else "other"."""
    return method if method in KNOWN_METHODS else OTHER


def bounded_status(status: int) -> str:
    """Return the status label: a three-digit status, else "other"."""
    return str(status) if 100 <= status <= 599 else OTHER


def mark_worker_dead(pid: int) -> None:
    """Forget a dead worker (Gunicorn's child_exit hook): see fold_dead_worker."""
    if multiprocess_mode():
        fold_dead_worker(pid, os.environ[MULTIPROCESS_ENV])


def fold_dead_worker(pid: int, directory: str) -> None:
    """Remove a dead worker's metric files, keeping what it counted in the archive.

    Its live gauges go (prometheus-client's mark_process_dead). Its counters and
    histograms must still count, so they are added to one archive file per kind rather
    than left as files per dead worker, which every scrape would read forever.
    """
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    for kind in _SUMMED_KINDS:
        dead = os.path.join(directory, f"{kind}_{pid}.db")
        _fold(dead, os.path.join(directory, f"{kind}_{ARCHIVE}.db"))


def _fold(dead_path: str, archive_path: str) -> None:
    # Renamed out of the scrape's sight first, so no scrape counts the figures twice
    # (one may miss them for the instant before they reach the archive).
    folding = dead_path + ".folding"
    try:
        os.rename(dead_path, folding)
    except FileNotFoundError:
        return
    archive = MmapedDict(archive_path)  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(folding):  # type: ignore[no-untyped-call]
            current, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
            archive.write_value(key, current + value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        archive.close()  # type: ignore[no-untyped-call]
    os.remove(folding)


def model_server_up_text(up: bool) -> bytes:
    """Return the exposition of ``onemodel_model_server_up`` (1 if it answered the scrape)."""
    # Written by hand: a Gauge object would create per-worker files in multiprocess mode.
    return (
        "# HELP onemodel_model_server_up 1 if the model server answered the scrape.\n"
        "# TYPE onemodel_model_server_up gauge\n"
        f"onemodel_model_server_up {1.0 if up else 0.0}\n"
    ).encode()
