"""Gunicorn settings and hooks for onemodel: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Command-line flags (``--bind``, ``--workers``, ``--threads``...) override these values.
Workers never load TensorFlow: they decode images and talk to the one model server.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Where to listen. Default 127.0.0.1:8000; HOST and PORT change it (the container sets
# HOST=0.0.0.0). Typical: 0.0.0.0:8000 behind a load balancer.
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]

# Worker processes (Gunicorn's WEB_CONCURRENCY convention). Default 2; typical 2-4 per
# core. Workers only decode and resize images, so they are small (no TensorFlow).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Threads per worker. Default 8; typical 4-16. Each thread holds its own connection to the
# model server, so workers x threads requests can wait in the model server's batch queue
# at once: that is what lets batches fill (keep it >= MAX_BATCH_SIZE in total). A gthread
# worker accepts more keep-alive connections than it has threads and the kernel does not
# spread them evenly, so give each worker enough threads for its share of clients (the
# benchmark found few threads per worker left requests waiting in workers, not batched).
threads = int(os.environ.get("WEB_THREADS", "8"))

# Threaded workers ("gthread") so one worker keeps several requests in flight.
worker_class = "gthread"

# Seconds a worker may be silent before the master restarts it. Default 60; keep it above
# REQUEST_TIMEOUT_S so Gunicorn never kills a worker waiting on a slow batch.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))

# Seconds given to in-flight requests after SIGTERM before workers are killed. Default 30.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))

# Seconds an idle keep-alive connection stays open. Default 5; typical 2-75 (match the
# load balancer's idle timeout).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# Load the app in each worker after fork, never in the master: a model-server connection
# made before fork would be shared (and corrupted) by every worker. Keep False.
preload_app = False

# Access log to stderr ("-"); None disables it. Error log to stderr.
accesslog = os.environ.get("ACCESS_LOG", "-") or None
errorlog = "-"
# One line per request: client, time, request line, status, bytes, seconds taken, the
# worker's pid and the request id (also returned as the X-Request-ID header).
access_log_format = (
    'remote=%(h)s time="%(t)s" request="%(r)s" status=%(s)s bytes=%(b)s '
    "duration_s=%(L)s pid=%(p)s request_id=%({x-request-id}o)s"
)
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Request line and header limits (Gunicorn defaults), stated for the record.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# Gunicorn's runtime control socket ($HOME/.gunicorn) is not used; off, so a read-only
# container filesystem does not log errors.
control_socket_disable = True

# Temporary files for worker heartbeats in memory rather than on disk (containers).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

_embedded: Any = None


def _prepare_metrics_directory() -> None:
    # prometheus-client's multiprocess mode sums every worker's figures from files in this
    # directory; it reads the variable at import, so it is set before any worker exists.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not directory:
        import tempfile  # noqa: PLC0415

        directory = tempfile.mkdtemp(prefix="onemodel-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def on_starting(server: Any) -> None:
    """Start a private model server unless MODEL_SERVER_ADDRESS names an external one."""
    global _embedded
    from onemodel.memory import limit_malloc_arenas  # noqa: PLC0415

    limit_malloc_arenas()  # before any worker thread exists; workers inherit it
    _prepare_metrics_directory()
    if os.environ.get("MODEL_SERVER_ADDRESS", "").strip():
        server.log.info("using the model server at %s", os.environ["MODEL_SERVER_ADDRESS"])
        return
    from onemodel.embedded import EmbeddedModelServer  # noqa: PLC0415
    from onemodel.errors import OneModelError  # noqa: PLC0415
    from onemodel.settings import Settings  # noqa: PLC0415

    try:
        settings = Settings.from_env()
        _embedded = EmbeddedModelServer()
        _embedded.start()
        server.log.info("waiting for the model server to load and warm up the model")
        info = _embedded.wait_ready(settings.model_server_start_timeout_s)
    except OneModelError as error:
        server.log.error("cannot start: %s", error.message)
        if _embedded is not None:
            _embedded.stop()
        sys.exit(1)
    server.log.info(
        "model server ready: %s, input %s, %s classes",
        info.get("model"),
        info.get("input_size"),
        info.get("num_classes"),
    )
    # Forked workers inherit these and connect to the private server.
    os.environ.update(_embedded.worker_environ())
    _embedded.supervise()


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker's live metric files."""
    from onemodel.metrics import mark_worker_dead  # noqa: PLC0415

    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Stop the private model server after the workers have stopped."""
    if _embedded is not None:
        server.log.info("stopping the model server")
        _embedded.stop()
