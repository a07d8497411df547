"""A running Gunicorn deployment for e2e tests: its processes, its access log, its artifacts."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.support.processes import (
    PYTHON,
    ROOT,
    Service,
    base_env,
    free_port,
    start_gunicorn,
    wait_ready,
    wait_until,
)

ARTIFACTS = ROOT / "tests" / "artifacts"
# The master's children that are not Gunicorn workers.
_HELPER_ROLES = ("onemodel.model_server", "onemodel.grpc_server")
# One access-log line (gunicorn.conf.py's access_log_format).
_ACCESS = re.compile(
    r'request="(?P<method>\S+) (?P<path>\S+) [^"]*" status=(?P<status>\d+) .*?'
    r"duration_s=(?P<duration>[\d.]+) pid=<(?P<pid>\d+)> request_id=(?P<request_id>\S+)"
)


@dataclass(frozen=True)
class AccessLine:
    """What the access log says about one request."""

    method: str
    path: str
    status: int
    duration_s: float
    pid: int
    request_id: str


class WebDeployment:
    """Gunicorn (and, when embedded, the model server its master started) at base_url."""

    def __init__(self, gunicorn: Service, port: int) -> None:
        self.gunicorn = gunicorn
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        # Every model server and gRPC server seen, so teardown can end one the master left
        # behind (they run in sessions of their own).
        self._model_servers: dict[int, psutil.Process] = {}

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def worker_pids(self) -> set[int]:
        """Return the pids of the Gunicorn workers (the master's children but the model server)."""
        return {
            child.pid
            for child in psutil.Process(self.gunicorn.pid).children()
            if not any(role in " ".join(_cmdline(child)) for role in _HELPER_ROLES)
        }

    def model_server(self) -> psutil.Process | None:
        """Return the private model server the master runs now, if any."""
        for child in psutil.Process(self.gunicorn.pid).children():
            if "onemodel.model_server" in " ".join(_cmdline(child)):
                self._model_servers[child.pid] = child
                return child
        return None

    def grpc_server(self) -> psutil.Process | None:
        """Return the gRPC server process the master runs now, if any."""
        for child in psutil.Process(self.gunicorn.pid).children():
            if "onemodel.grpc_server" in " ".join(_cmdline(child)):
                self._model_servers[child.pid] = child
                return child
        return None

    def model_servers(self) -> dict[str, psutil.Process]:
        """Return the private model servers the master runs now, by their socket address."""
        found = {}
        for child in psutil.Process(self.gunicorn.pid).children():
            if "onemodel.model_server" in " ".join(_cmdline(child)):
                self._model_servers[child.pid] = child
                try:
                    found[child.environ()["MODEL_SERVER_ADDRESS"]] = child
                except (psutil.Error, KeyError):
                    continue
        return found

    def readyz(self) -> dict[str, Any]:
        """Return /readyz's JSON (asserting 200)."""
        response = requests.get(self.url("/readyz"), timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until /readyz answers 200 (e.g. after a test restarted the model server)."""
        return wait_ready(self.base_url, timeout_s=timeout_s, service=self.gunicorn)

    def access_lines(self) -> list[AccessLine]:
        """Return every access-log line written so far."""
        return [
            AccessLine(
                match["method"],
                match["path"],
                int(match["status"]),
                float(match["duration"]),
                int(match["pid"]),
                match["request_id"],
            )
            for match in _ACCESS.finditer(self.gunicorn.log())
        ]

    def pids_by_request_id(self) -> dict[str, int]:
        """Return the worker pid that answered each request id."""
        return {line.request_id: line.pid for line in self.access_lines()}

    def stop(self) -> int | None:
        """Stop Gunicorn; end any model server it left behind; return the master's exit code."""
        for process in self._model_servers.values():
            _resume(process)  # a test may have paused it (SIGSTOP)
        code = self.gunicorn.stop()
        for process in self._model_servers.values():
            if process.is_running():  # checks the start time too: never a recycled pid
                process.kill()
        return code


def start_web(
    directory: Path,
    env: dict[str, str],
    *,
    workers: int = 2,
    threads: int = 4,
    config: Path | None = None,
    timeout_s: float = 120.0,
    ready: bool = True,
) -> WebDeployment:
    """Start Gunicorn on a free 127.0.0.1 port with env (see base_env) and wait until ready.

    With ready=False, wait only until the workers answer /healthz (the model server may be
    unreachable on purpose).
    """
    port = free_port()
    gunicorn = start_gunicorn(
        base_env(**env),
        directory / "gunicorn.log",
        port,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        config=config,
    )
    deployment = WebDeployment(gunicorn, port)
    try:
        if ready:
            wait_ready(deployment.base_url, timeout_s=timeout_s, service=gunicorn)
        else:
            wait_until(
                lambda: requests.get(deployment.url("/healthz"), timeout=5).status_code == 200,
                timeout_s,
                f"{deployment.base_url}/healthz",
            )
        deployment.model_server()
        deployment.grpc_server()
    except BaseException:
        deployment.stop()
        raise
    return deployment


def wait_for_pids(
    deployment: WebDeployment, request_ids: set[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Wait until the access log has a line for every request id; return their worker pids."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = deployment.pids_by_request_id()
        if request_ids <= set(found) or time.monotonic() > deadline:
            return {
                request_id: found[request_id] for request_id in request_ids if request_id in found
            }
        time.sleep(0.05)


def record_figures(name: str, key: str, figures: dict[str, Any]) -> Path:
    """Merge figures under key into tests/artifacts/<name>.json (kept for people to read)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.json"
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[key] = figures
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"{name}.json[{key}]: {json.dumps(figures, sort_keys=True)}")
    return path


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _resume(process: psutil.Process) -> None:
    try:
        if process.is_running():
            process.send_signal(signal.SIGCONT)
    except psutil.Error:
        pass


FAKE_MODEL_SERVER = ROOT / "tests" / "support" / "fake_model_server.py"


def start_fake_model_server(address: str, authkey: str, log_path: Path, *args: str) -> Service:
    """Start tests/support/fake_model_server.py (NumPy model, no TensorFlow); wait until ready."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        [PYTHON, str(FAKE_MODEL_SERVER), address, *args],
        cwd=ROOT,
        env=base_env(MODEL_SERVER_AUTHKEY=authkey),
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.close()
    service = Service(process, log_path, log)
    if line.strip() != b"ready":
        service.stop()
        raise AssertionError(f"the fake model server did not start:\n{service.log()[-2000:]}")
    return service
