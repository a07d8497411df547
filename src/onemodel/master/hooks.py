"""The Gunicorn master's hooks: a private model server and the gRPC server, SIGHUP, stop."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, NoReturn

from onemodel.errors import OneModelError
from onemodel.memory import limit_malloc_arenas
from onemodel.settings import Settings

# prometheus-client reads this variable when it is first imported, so nothing that imports
# it (onemodel.web.metrics, .embedded) may be imported here before the directory is set.
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_state: dict[str, Any] = {"embedded": None, "grpc": None, "metrics_directory": None}
# Seconds the master waits for the gRPC server to listen before giving up on starting.
_GRPC_START_TIMEOUT_S = 30.0


def on_starting(server: Any) -> None:
    """Start a private model server unless MODEL_SERVER_ADDRESS names an external one; then,
    when GRPC_PORT is set, the gRPC server process."""
    limit_malloc_arenas()  # before any worker thread exists; workers inherit it
    _prepare_metrics_directory()
    if os.environ.get("MODEL_SERVER_ADDRESS", "").strip():
        server.log.info("using the model server at %s", os.environ["MODEL_SERVER_ADDRESS"])
    else:
        _start_embedded_model_server(server)
    _start_grpc_server(server)


def _start_embedded_model_server(server: Any) -> None:
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


def _start_grpc_server(server: Any) -> None:
    """Start the gRPC server process when GRPC_PORT is set (after the model server)."""
    from onemodel.master.grpc_process import GrpcProcess  # noqa: PLC0415 (see above)

    try:
        settings = Settings.from_env()
    except OneModelError as error:
        _fail(server, error.message)
    if settings.grpc_port is None:
        return
    # The environment now names the model server (ours or the external one): the gRPC
    # process is one more client of it.
    grpc = GrpcProcess(settings.grpc_host, settings.grpc_port)
    if grpc.is_listening():
        _fail(server, f"GRPC_PORT={settings.grpc_port}: something already listens there")
    _state["grpc"] = grpc
    try:
        grpc.start()
        grpc.wait_listening(_GRPC_START_TIMEOUT_S)
    except OneModelError as error:
        _fail(server, error.message)
    server.log.info("gRPC server listening on %s:%d", settings.grpc_host, settings.grpc_port)
    grpc.supervise()


def _fail(server: Any, message: str) -> NoReturn:
    server.log.error("cannot start: %s", message)
    _stop_helpers()
    _remove_metrics_directory()
    sys.exit(1)


def _stop_helpers() -> None:
    """Stop the gRPC server (it drains its calls), then the private model server."""
    grpc = _state["grpc"]
    if grpc is not None:
        grpc.stop(Settings.from_env().grpc_graceful_timeout_s + 5.0)
        _state["grpc"] = None
    embedded = _state["embedded"]
    if embedded is not None:
        embedded.stop()
        _state["embedded"] = None


def on_reload(server: Any) -> None:
    """Pass the master's SIGHUP on to the private model server: it looks for new versions."""
    embedded = _state["embedded"]
    if embedded is not None:
        server.log.info("asking the model server to look for new model versions")
        embedded.reload()


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker: its metric files are removed, its counts kept in the archive."""
    from onemodel.web.metrics import mark_worker_dead  # noqa: PLC0415 (see above)

    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """After the workers have stopped: stop the gRPC server (it drains), then the model server.

    Gunicorn has no hook at the start of a shutdown, so gRPC calls keep being answered while
    the HTTP workers drain, and are drained in turn here, before the model server stops.
    """
    if _state["grpc"] is not None:
        server.log.info("stopping the gRPC server (it finishes the calls in flight)")
    if _state["embedded"] is not None:
        server.log.info("stopping the model server")
    _stop_helpers()
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
