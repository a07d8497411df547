"""The Gunicorn master's hooks: start a private model server, forget dead workers, stop."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from onemodel.errors import OneModelError
from onemodel.memory import limit_malloc_arenas
from onemodel.settings import Settings

# prometheus-client reads this variable when it is first imported, so nothing that imports
# it (onemodel.web.metrics, .embedded) may be imported here before the directory is set.
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_state: dict[str, Any] = {"embedded": None, "metrics_directory": None}


def on_starting(server: Any) -> None:
    """Start a private model server unless MODEL_SERVER_ADDRESS names an external one."""
    limit_malloc_arenas()  # before any worker thread exists; workers inherit it
    _prepare_metrics_directory()
    if os.environ.get("MODEL_SERVER_ADDRESS", "").strip():
        server.log.info("using the model server at %s", os.environ["MODEL_SERVER_ADDRESS"])
        return
    from onemodel.master.embedded import EmbeddedModelServer  # noqa: PLC0415 (see above)

    embedded = None
    try:
        settings = Settings.from_env()
        embedded = EmbeddedModelServer(replicas=settings.model_server_replicas)
        _state["embedded"] = embedded
        embedded.start()
        server.log.info(
            "waiting for %d model server(s) to load and warm up the model",
            settings.model_server_replicas,
        )
        info = embedded.wait_ready(settings.model_server_start_timeout_s)
    except OneModelError as error:
        server.log.error("cannot start: %s", error.message)
        if embedded is not None:
            embedded.stop()
        _remove_metrics_directory()
        sys.exit(1)
    server.log.info(
        "model server ready: %s, input %s, %s classes",
        info.name,
        list(info.input_size),
        info.num_classes,
    )
    # Forked workers inherit these and connect to the private server.
    os.environ.update(embedded.worker_environ())
    embedded.supervise()


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker: its metric files are removed, its counts kept in the archive."""
    from onemodel.web.metrics import mark_worker_dead  # noqa: PLC0415 (see above)

    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Stop the private model server after the workers have stopped."""
    embedded = _state["embedded"]
    if embedded is not None:
        server.log.info("stopping the model server")
        embedded.stop()
    _remove_metrics_directory()


def _prepare_metrics_directory() -> None:
    # prometheus-client's multiprocess mode sums every worker's figures from files in this
    # directory; it reads the variable at import, so it is set before any worker exists.
    directory = os.environ.get(_METRICS_ENV, "").strip()
    if not directory:
        directory = tempfile.mkdtemp(prefix="onemodel-metrics-")
        os.environ[_METRICS_ENV] = directory
        _state["metrics_directory"] = directory  # ours: removed on exit
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def _remove_metrics_directory() -> None:
    directory = _state["metrics_directory"]
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        _state["metrics_directory"] = None
