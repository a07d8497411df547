"""Every Gunicorn setting of onemodel, and its hooks: what ``gunicorn.conf.py`` re-exports.

Read by the Gunicorn master when it loads its configuration file; nothing here connects or
loads anything (the hooks do, later). Command-line flags (``--bind``, ``--workers``...)
override these values. Workers never load TensorFlow: they decode images and talk to the
one model server.
"""

from __future__ import annotations

import os

from onemodel.master import hooks
from onemodel.settings import EnvParser


def _integer(name: str, default: int, minimum: int) -> int:
    """Read an integer variable; a bad value raises ConfigError naming it."""
    return EnvParser(os.environ).integer(name, default, minimum)


# Where to listen. Default 127.0.0.1:8000; HOST and PORT change it (the container sets
# HOST=0.0.0.0). Typical: 0.0.0.0:8000 behind a load balancer.
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{_integer('PORT', 8000, minimum=1)}"]

# Worker processes (Gunicorn's WEB_CONCURRENCY convention). Default 2; typical 2-4 per
# core. Workers only decode and resize images, so they are small (no TensorFlow).
workers = _integer("WEB_CONCURRENCY", 2, minimum=1)

# Threads per worker. Default 8; typical 4-16. Each thread holds its own connection to the
# model server, so workers x threads requests can wait in the model server's batch queue
# at once: that is what lets batches fill (keep it >= MAX_BATCH_SIZE in total). A gthread
# worker accepts more keep-alive connections than it has threads and the kernel does not
# spread them evenly, so give each worker enough threads for its share of clients (the
# benchmark found few threads per worker left requests waiting in workers, not batched).
threads = _integer("WEB_THREADS", 8, minimum=1)

# Gunicorn's threaded worker ("gthread"), except that a request gets a thread only once it
# has fully arrived: the worker's event loop reads heads and bodies without blocking, with
# deadlines (REQUEST_HEADER_TIMEOUT_S, REQUEST_BODY_TIMEOUT_S), so slow or idle clients
# cannot hold the threads (slowloris). It also answers Gunicorn's own errors (400, 408,
# 413, 414, 431, 501) as JSON with an X-Request-ID. See docs/hostile-clients.md.
worker_class = "onemodel.web.worker.GuardedThreadWorker"

# Connections one worker holds at once (reading, idle, being answered). Default 1000;
# typical 500-5000 (each costs a file descriptor and a few KB, never a thread). When a
# worker is full it closes its oldest idle connection to accept a new one.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))

# Seconds a worker may be silent before the master restarts it. Default 60; keep it above
# REQUEST_TIMEOUT_S so Gunicorn never kills a worker waiting on a slow batch.
timeout = _integer("GUNICORN_TIMEOUT", 60, minimum=0)

# Seconds given to in-flight requests after SIGTERM before workers are killed. Default 30.
graceful_timeout = _integer("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=0)

# Seconds an idle keep-alive connection stays open. Default 5; typical 2-75 (match the
# load balancer's idle timeout).
keepalive = _integer("GUNICORN_KEEPALIVE", 5, minimum=0)

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

# The hooks: a private model server when none is given, metric files, a clean stop.
on_starting = hooks.on_starting
# SIGHUP (kill -HUP <master>): Gunicorn restarts its workers gracefully and the private model
# server looks for new model versions (see docs/versions.md).
on_reload = hooks.on_reload
child_exit = hooks.child_exit
on_exit = hooks.on_exit
