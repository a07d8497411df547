"""The private model server a Gunicorn master starts, supervises and stops when none is given."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from onemodel.boundary.client import ModelClient
from onemodel.boundary.contract import ModelInfo
from onemodel.errors import ModelUnavailableError, OneModelError
from onemodel.settings import Address
from onemodel.web.metrics import MULTIPROCESS_ENV

logger = logging.getLogger(__name__)

_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0
_HEALTHY_RESET_S = 60.0


class EmbeddedModelServer:
    """Run ``python -m onemodel.model_server`` on a Unix socket in a private 0700 directory.

    The authkey is fresh and random, written to a 0600 file in that directory: it never
    appears in a command line or in the environment of any process.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._base_environ = dict(os.environ if environ is None else environ)
        self._directory = Path(tempfile.mkdtemp(prefix="onemodel-"))  # mkdtemp makes it 0700
        self.address = Address(path=str(self._directory / "model.sock"))
        self.authkey_file = self._directory / "authkey"
        self._authkey = secrets.token_hex(32).encode()
        descriptor = os.open(self.authkey_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(self._authkey)
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    def worker_environ(self) -> dict[str, str]:
        """Return the variables web workers need to reach this server."""
        return {
            "MODEL_SERVER_ADDRESS": str(self.address),
            "MODEL_SERVER_AUTHKEY_FILE": str(self.authkey_file),
        }

    def start(self) -> None:
        """Start the model-server process."""
        environ = {
            key: value
            for key, value in self._base_environ.items()
            # The model server keeps its own metrics registry: it must not write the web
            # workers' multiprocess files (prometheus-client reads this variable at import).
            if key not in ("MODEL_SERVER_AUTHKEY", "MODEL_SERVER_AUTHKEY_FILE", MULTIPROCESS_ENV)
        }
        environ.update(self.worker_environ())
        with self._lock:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "onemodel.model_server"],
                env=environ,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C aimed at Gunicorn must not stop the model before
                # the workers have finished their requests; the master stops it last.
                start_new_session=True,
            )
        logger.info("started the model server (pid %d) on %s", self._process.pid, self.address)

    def wait_ready(self, timeout_s: float) -> ModelInfo:
        """Block until the model is loaded and warm; raise OneModelError if it dies or stalls."""
        client = ModelClient(self.address, self._authkey)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if not self.is_running():
                    raise OneModelError(
                        "the model server exited before it was ready (see its log above)"
                    )
                try:
                    info: ModelInfo | None = client.info()
                except ModelUnavailableError:
                    info = None
                if info is not None and info.ready:
                    return info
                if time.monotonic() > deadline:
                    raise OneModelError(f"the model server was not ready after {timeout_s:g} s")
                time.sleep(0.2)
        finally:
            client.close()

    def is_running(self) -> bool:
        """Return whether the model-server process is alive."""
        process = self._process
        # Gunicorn's master reaps every child on SIGCHLD, ours included; poll() then sees
        # ECHILD and reports an exit, which is what we want to know.
        return process is not None and process.poll() is None

    def supervise(self) -> None:
        """Restart the model server whenever it dies, with exponential backoff, in a thread."""
        self._supervisor = threading.Thread(
            target=self._supervise, name="model-server-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the model server (SIGTERM, then SIGKILL) and remove the private directory."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("the model server ignored SIGTERM for %g s; killing it", timeout_s)
                process.kill()
                process.wait(5)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _supervise(self) -> None:
        backoff = _BACKOFF_INITIAL_S
        started = time.monotonic()
        while not self._stopping.wait(0.2):
            if self.is_running():
                if time.monotonic() - started > _HEALTHY_RESET_S:
                    backoff = _BACKOFF_INITIAL_S
                continue
            logger.error("the model server died; restarting it in %.1f s", backoff)
            if self._stopping.wait(backoff):
                return
            self.start()
            self.restarts += 1
            started = time.monotonic()
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
