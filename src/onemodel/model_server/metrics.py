"""The model server's own Prometheus metrics, exposed to the web tier through the manager."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onemodel.model_server.batcher import BatchRecord

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """The model server's own figures, exposed through the manager to the web tier."""

    def __init__(self, queue_depth: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_size = Histogram(
            "onemodel_batch_size",
            "Images per model call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "onemodel_inference_duration_seconds",
            "Time of one model call (a whole batch).",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "onemodel_queue_wait_seconds",
            "Time the oldest request of a batch waited before the model call.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.images = Counter("onemodel_images", "Images predicted.", registry=self.registry)
        self.failed_batches = Counter(
            "onemodel_failed_batches", "Model calls that raised.", registry=self.registry
        )
        self.refused = Counter(
            "onemodel_refused_predictions",
            "Predictions refused or abandoned, by reason (overloaded, timeout).",
            ("reason",),
            registry=self.registry,
        )
        self.model_loads = Counter(
            "onemodel_model_loads", "Times this process loaded the model.", registry=self.registry
        )
        self.model_swaps = Counter(
            "onemodel_model_swaps",
            "Times a newly loaded model version took over from the served one.",
            registry=self.registry,
        )
        self.version_failures = Counter(
            "onemodel_model_version_failures",
            "Model versions that failed to load or warm up (and were skipped).",
            registry=self.registry,
        )
        # One series at a time, labelled by the served version: bounded however many come.
        self.served_version = ""
        self._started = time.time()
        self._queue_depth = queue_depth
        self.registry.register(_QueueCollector(self))

    def observe_batch(self, record: BatchRecord) -> None:
        """Record one model call (the batcher's on_batch callback)."""
        self.batch_size.observe(record.size)
        self.inference.observe(record.inference_s)
        self.queue_wait.observe(record.queue_wait_s)
        if record.failed:
            self.failed_batches.inc()
        else:
            self.images.inc(record.size)

    def set_queue_depth(self, queue_depth: Callable[[], int]) -> None:
        """Tell the metrics how to read the current queue depth."""
        self._queue_depth = queue_depth

    def queue_depth(self) -> int:
        """Return the images waiting for a model call now."""
        return self._queue_depth() if self._queue_depth is not None else 0

    def render(self) -> bytes:
        """Return the model server's exposition text."""
        return generate_latest(self.registry)


class _QueueCollector(Collector):
    """Reads the queue depth when scraped (a live value, not a stored one)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily(
            "onemodel_queue_depth",
            "Images waiting in the model server's batch queue.",
            value=self._metrics.queue_depth(),
        )
        served = GaugeMetricFamily(
            "onemodel_model_version_info",
            "The model version serving predictions (value 1, the version in the label).",
            labels=("version",),
        )
        if self._metrics.served_version:
            served.add_metric((self._metrics.served_version,), 1.0)
        yield served
