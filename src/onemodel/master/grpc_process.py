"""The gRPC server process a Gunicorn master starts, supervises and stops when GRPC_PORT is set."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from onemodel.errors import OneModelError

logger = logging.getLogger(__name__)

_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0
_HEALTHY_RESET_S = 60.0


class GrpcProcess:
    """Run ``python -m onemodel.grpc_server`` with the master's environment.

    The environment must already name the model server (MODEL_SERVER_ADDRESS and its
    authkey), as the web workers' does: the gRPC process is one more client of it, so its
    requests join the same batches.
    """

    def __init__(self, host: str, port: int, environ: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self._environ = dict(os.environ if environ is None else environ)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """Return the running process's pid, if any."""
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the gRPC server process."""
        with self._lock:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "onemodel.grpc_server"],
                env=self._environ,
                stdin=subprocess.DEVNULL,
                # Its own session, as the model server's: the master stops it in order.
                start_new_session=True,
            )
        logger.info("started the gRPC server (pid %d) for port %d", self._process.pid, self.port)

    def wait_listening(self, timeout_s: float) -> None:
        """Block until the port accepts connections; raise OneModelError if it exits first."""
        deadline = time.monotonic() + timeout_s
        while not self.is_listening():
            if not self.is_running():
                raise OneModelError(
                    f"the gRPC server exited before listening on port {self.port} "
                    "(see its log above)"
                )
            if time.monotonic() > deadline:
                raise OneModelError(f"the gRPC server was not listening after {timeout_s:g} s")
            time.sleep(0.1)

    def is_listening(self) -> bool:
        """Return whether something accepts TCP connections on the gRPC port."""
        return port_open(self.host, self.port)

    def is_running(self) -> bool:
        """Return whether the process is alive."""
        process = self._process
        return process is not None and process.poll() is None

    def supervise(self) -> None:
        """Restart the process whenever it dies, with exponential backoff, in a thread."""
        self._supervisor = threading.Thread(
            target=self._supervise, name="grpc-server-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self, timeout_s: float) -> None:
        """SIGTERM (it drains its calls in flight for GRPC_GRACEFUL_TIMEOUT_S), then SIGKILL."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("the gRPC server ignored SIGTERM for %g s; killing it", timeout_s)
            process.kill()
            process.wait(5)

    def _supervise(self) -> None:
        backoff = _BACKOFF_INITIAL_S
        started = time.monotonic()
        while not self._stopping.wait(0.2):
            if self.is_running():
                if time.monotonic() - started > _HEALTHY_RESET_S:
                    backoff = _BACKOFF_INITIAL_S
                continue
            logger.error("the gRPC server died; restarting it in %.1f s", backoff)
            if self._stopping.wait(backoff):
                return
            self.start()
            self.restarts += 1
            started = time.monotonic()
            backoff = min(backoff * 2, _BACKOFF_MAX_S)


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Return whether host:port accepts a TCP connection (0.0.0.0 and :: mean localhost)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=timeout_s):
            return True
    except OSError:
        return False
