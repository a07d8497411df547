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

# A model server that dies after a healthy run is restarted at once: its socket already
# refuses, so a delay only lengthens the outage (it was 0.5 s of a ~3 s recovery on a warm
# OpenVINO cache). One that dies again before _HEALTHY_RESET_S waits 0.5 s, then 1, 2, ...
# up to 30 s: a crash loop (a bad model file, no memory) starts at most once per 30 s.
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0
_HEALTHY_RESET_S = 60.0
# How often the supervisor looks for a dead model server (a waitpid per replica: cheap).
_SUPERVISE_POLL_S = 0.05
# How often wait_ready asks a starting model server whether it is ready (one info() call).
_READY_POLL_S = 0.05


class EmbeddedModelServer:
    """Run ``replicas`` x ``python -m onemodel.model_server``, each on its own Unix socket.

    The sockets live in one private 0700 directory. The authkey (one for the pool) is fresh
    and random, written to a 0600 file in that directory: it never appears in a command line
    or in the environment of any process. Workers reach every replica through a pool, so a
    crash of one costs nothing while the master restarts it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, replicas: int = 1) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self._base_environ = dict(os.environ if environ is None else environ)
        self._directory = Path(tempfile.mkdtemp(prefix="onemodel-"))  # mkdtemp makes it 0700
        names = ["model.sock"] if replicas == 1 else [f"model-{i}.sock" for i in range(replicas)]
        self.addresses = [Address(path=str(self._directory / name)) for name in names]
        self.authkey_file = self._directory / "authkey"
        self._authkey = secrets.token_hex(32).encode()
        descriptor = os.open(self.authkey_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(self._authkey)
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def address(self) -> Address:
        """Return the first replica's address."""
        return self.addresses[0]

    def worker_environ(self) -> dict[str, str]:
        """Return the variables web workers need to reach every replica."""
        return {
            "MODEL_SERVER_ADDRESS": ",".join(str(address) for address in self.addresses),
            "MODEL_SERVER_AUTHKEY_FILE": str(self.authkey_file),
        }

    def start(self) -> None:
        """Start every model-server process."""
        for index in range(len(self.addresses)):
            self._start(index)

    def _start(self, index: int) -> None:
        environ = {
            key: value
            for key, value in self._base_environ.items()
            # The model server keeps its own metrics registry: it must not write the web
            # workers' multiprocess files (prometheus-client reads this variable at import).
            if key not in ("MODEL_SERVER_AUTHKEY", "MODEL_SERVER_AUTHKEY_FILE", MULTIPROCESS_ENV)
        }
        environ.update(
            MODEL_SERVER_ADDRESS=str(self.addresses[index]),
            MODEL_SERVER_AUTHKEY_FILE=str(self.authkey_file),
        )
        with self._lock:
            process = subprocess.Popen(
                [sys.executable, "-m", "onemodel.model_server"],
                env=environ,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C aimed at Gunicorn must not stop the model before
                # the workers have finished their requests; the master stops it last.
                start_new_session=True,
            )
            self._processes[index] = process
        logger.info("started the model server (pid %d) on %s", process.pid, self.addresses[index])

    def wait_ready(self, timeout_s: float) -> ModelInfo:
        """Block until every replica is loaded and warm; raise OneModelError if one dies."""
        deadline = time.monotonic() + timeout_s
        infos = [
            self._wait_ready(index, deadline, timeout_s) for index in range(len(self.addresses))
        ]
        return infos[0]

    def _wait_ready(self, index: int, deadline: float, timeout_s: float) -> ModelInfo:
        client = ModelClient(self.addresses[index], self._authkey)
        try:
            while True:
                if not self.is_running(index):
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
                time.sleep(_READY_POLL_S)
        finally:
            client.close()

    def is_running(self, index: int = 0) -> bool:
        """Return whether replica index's model-server process is alive."""
        process = self._processes[index]
        # Gunicorn's master reaps every child on SIGCHLD, ours included; poll() then sees
        # ECHILD and reports an exit, which is what we want to know.
        return process is not None and process.poll() is None

    def reload(self) -> None:
        """Ask every model-server replica to look for new model versions now (SIGHUP)."""
        with self._lock:
            processes = [p for p in self._processes if p is not None and p.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGHUP)

    def supervise(self) -> None:
        """Restart each model server whenever it dies, with exponential backoff, in a thread."""
        self._supervisor = threading.Thread(
            target=self._supervise, name="model-server-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every model server (SIGTERM, then SIGKILL); remove the private directory."""
        self._stopping.set()
        with self._lock:
            running = [p for p in self._processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)  # all at once: they drain in parallel
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("the model server ignored SIGTERM for %g s; killing it", timeout_s)
                process.kill()
                process.wait(5)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _supervise(self) -> None:
        count = len(self.addresses)
        crashes = [0] * count  # deaths in a row, each within _HEALTHY_RESET_S of its start
        started = [time.monotonic()] * count
        restart_at: list[float | None] = [None] * count
        while not self._stopping.wait(_SUPERVISE_POLL_S):
            now = time.monotonic()
            for index in range(count):
                if self.is_running(index):
                    if now - started[index] > _HEALTHY_RESET_S:
                        crashes[index] = 0
                    continue
                at = restart_at[index]
                if at is None:
                    delay = restart_delay_s(crashes[index])
                    logger.error(
                        "the model server died; restarting it in %.1f s (%s)",
                        delay,
                        self.addresses[index],
                    )
                    restart_at[index] = at = now + delay
                if now < at:
                    continue
                self._start(index)
                self.restarts += 1
                started[index] = time.monotonic()
                restart_at[index] = None
                crashes[index] += 1


def restart_delay_s(crashes: int) -> float:
    """Return how long to wait before restarting a server that died ``crashes`` times in a row.

    0 for the first death after a healthy run, then 0.5 s doubling to 30 s.
    """
    if crashes <= 0:
        return 0.0
    return float(min(_BACKOFF_INITIAL_S * 2 ** (crashes - 1), _BACKOFF_MAX_S))
